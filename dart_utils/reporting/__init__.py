"""The paper's figures, table formatting, and the one-page report of a run."""
