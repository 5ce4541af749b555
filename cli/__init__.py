"""casetrail: the command line for operators and auditors (console script `casetrail`)."""
