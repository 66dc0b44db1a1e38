//! Times in reports and stored state as RFC 3339 (serde `with` modules).

/// Serde helpers: timestamps as RFC 3339 strings.
pub mod rfc3339 {
    use serde::Serializer;
    use time::OffsetDateTime;

    /// Serializes a time as RFC 3339, UTC, whole seconds.
    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&meshca::format_time(*t))
    }
}

/// Serde helpers: optional timestamps as RFC 3339 strings or null.
pub mod rfc3339_opt {
    use serde::Serializer;
    use time::OffsetDateTime;

    /// Serializes an optional time as RFC 3339 or null.
    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&meshca::format_time(*t)),
            None => s.serialize_none(),
        }
    }
}
