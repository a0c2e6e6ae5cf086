"""Mail: bytes -> a parsed message (parse; its header fields alone: headers), automatic-mail detection
(automatic)."""
