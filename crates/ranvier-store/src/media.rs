//! Storage of media metadata: uploads, thumbnails, quarantine, scan results.
