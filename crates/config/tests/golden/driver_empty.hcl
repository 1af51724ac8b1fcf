# No options at all: every default.
