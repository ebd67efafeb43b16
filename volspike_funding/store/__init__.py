"""Every format that crosses a process boundary, with its writer and its reader: the state file and the daemon's
status in it, the reference file, the comparison log, the consumers' status files, the file watcher and view, the
Redis store, and the interface both backends implement (``backend``)."""

__all__ = ["backend", "comparison_log", "consumer_status", "daemon_status", "filewatch", "redis_layout",
           "redis_store", "reference", "statefile", "view"]
