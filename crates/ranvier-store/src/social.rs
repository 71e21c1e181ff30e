//! Storage of the social layer: profiles, receipts, presence, room aliases, the room and user directories.
