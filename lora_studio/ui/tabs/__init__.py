"""The studio's tabs: Dataset, Train, Mix, Generate."""
