"""The phases of an experiment: preparing data, training a candidate, scoring what it handed over."""
