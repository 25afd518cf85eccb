"""Taking a trained backbone elsewhere: export formats with their preprocessing, and features
of a user's own images (`selfsup export`, `selfsup embed`)."""
