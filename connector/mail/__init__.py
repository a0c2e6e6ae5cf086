"""Mail: bytes -> a parsed message (parse), automatic-mail detection (automatic)."""
