"""Spins forever while being imported: the import deadline kills it; every check errors."""
# verdict: * error "importing the submission took longer than"
# max-score: 0
while True:
    pass
