"""The ``sona`` command line: parsing and dispatch only; the work is in training/ and service/."""
