//! The numbers of the proxy-wasm ABI 0.2.1 and its header-map encoding.

/// What a host function answers (`WasmResult` in the ABI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
}

impl From<Status> for u32 {
    fn from(status: Status) -> u32 {
        status as u32
    }
}

/// What a stream callback asks of the host.
pub(crate) const ACTION_CONTINUE: u32 = 0;

pub(crate) mod buffer {
    pub(crate) const HTTP_REQUEST_BODY: u32 = 0;
    pub(crate) const HTTP_RESPONSE_BODY: u32 = 1;
    pub(crate) const HTTP_CALL_RESPONSE_BODY: u32 = 4;
    pub(crate) const VM_CONFIGURATION: u32 = 6;
    pub(crate) const PLUGIN_CONFIGURATION: u32 = 7;
}

pub(crate) mod map {
    pub(crate) const HTTP_REQUEST_HEADERS: u32 = 0;
    pub(crate) const HTTP_REQUEST_TRAILERS: u32 = 1;
    pub(crate) const HTTP_RESPONSE_HEADERS: u32 = 2;
    pub(crate) const HTTP_RESPONSE_TRAILERS: u32 = 3;
    pub(crate) const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
    pub(crate) const HTTP_CALL_RESPONSE_TRAILERS: u32 = 7;
}

pub(crate) mod stream {
    pub(crate) const HTTP_REQUEST: u32 = 0;
    pub(crate) const HTTP_RESPONSE: u32 = 1;
}

/// A header map as the ABI encodes it: the pair count, each pair's two
/// lengths (all `u32` little-endian), then each name and value followed by
/// a NUL.
pub(crate) fn encode_map(pairs: &[(String, String)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| k.len() + v.len() + 10)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// Reads an encoded header map; `None` when it is malformed (lengths past
/// the end, or text that is not UTF-8).
pub(crate) fn decode_map(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let raw = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(raw.try_into().ok()?) as usize)
    };
    let count = word(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    for n in 0..count {
        let mut text = |len: usize| -> Option<String> {
            let raw = bytes.get(data..data.checked_add(len)?)?;
            data = data.checked_add(len)?.checked_add(1)?;
            String::from_utf8(raw.to_vec()).ok()
        };
        let (name_len, value_len) = (word(4 + n * 8)?, word(8 + n * 8)?);
        let name = text(name_len)?;
        let value = text(value_len)?;
        pairs.push((name, value));
    }
    Some(pairs)
}

/// A property path as the ABI encodes it (segments separated by NULs),
/// joined with dots: `request\0path` is `request.path`.
pub(crate) fn property_path(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    Some(text.trim_end_matches('\0').replace('\0', "."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_round_trip_and_malformed_ones_are_refused() {
        let pairs = vec![
            (":path".to_string(), "/hello".to_string()),
            ("x-empty".to_string(), String::new()),
        ];
        let bytes = encode_map(&pairs);
        assert_eq!(decode_map(&bytes), Some(pairs));
        assert_eq!(decode_map(&bytes[..bytes.len() - 3]), None);
        let mut huge = bytes.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_map(&huge), None);
        assert_eq!(decode_map(&[]), Some(Vec::new()));
    }

    #[test]
    fn property_paths_read_as_dotted_names() {
        assert_eq!(
            property_path(b"request\0path").as_deref(),
            Some("request.path")
        );
        assert_eq!(
            property_path(b"plugin_name\0").as_deref(),
            Some("plugin_name")
        );
    }
}
