"""Mutation testing of the delivery path: `make mutation` runs mutmut, then prints the scores."""
