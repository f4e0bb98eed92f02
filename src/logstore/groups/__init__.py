"""Consumer groups: the coordinator (membership, generations, fencing), assignors, and committed
offsets stored in the internal compacted topic ``__consumer_offsets``."""
