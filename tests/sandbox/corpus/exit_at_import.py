"""Prints a fake success and exits with status 0 while being imported: exit 0 is not success."""
# verdict: * error "called sys.exit(0)"
# max-score: 0
import sys

print("All tests passed! score: 10/10")
sys.exit(0)
