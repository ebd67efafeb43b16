"""Every format that crosses a process boundary, with its writer and its reader: the state file, the reference
file, the comparison log, the consumers' status files, the file watcher and view, the Redis store, and the
interface both backends implement (``backend``)."""

__all__ = ["backend", "comparison_log", "consumer_status", "filewatch", "redis_layout", "redis_store", "reference",
           "statefile", "view"]
