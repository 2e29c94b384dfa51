"""charter: constitutional AI feedback. Principle files in, AI-judged preference data out."""

__version__ = "0.1.0"
