"""Text-to-image generators the project trains and ships itself (the embedded world's trained generator)."""
