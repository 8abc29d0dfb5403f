"""People counting from a camera (driver ``camera``): frames stay in memory, only counts leave."""
