"""A worked itc plugin: one strategy and one scorer, found through entry points."""
