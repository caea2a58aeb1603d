//! Answers assembled from parts for SDK clients: a JSON object whose first
//! member is a list of values already rendered (secrets, parameters) and
//! whose second is a list of what could not be read. One buffer sized up
//! front, because it holds the values: no reallocation leaves a copy behind.

use secrets_manager_agent_core::secret::SecretBytes;

/// `head`, the `items` comma-separated, `middle`, `rest`, then `}`.
pub(crate) fn object(head: &[u8], items: &[&[u8]], middle: &[u8], rest: &[u8]) -> SecretBytes {
    let size = head.len()
        + items.iter().map(|i| i.len()).sum::<usize>()
        + items.len().saturating_sub(1)
        + middle.len()
        + rest.len()
        + 1;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(head);
    for (at, item) in items.iter().enumerate() {
        if at > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(middle);
    body.extend_from_slice(rest);
    body.push(b'}');
    debug_assert_eq!(body.len(), size);
    SecretBytes::new(body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_are_comma_separated() {
        let body = super::object(b"{\"A\":[", &[b"1", b"2"], b"],\"B\":", b"[]");
        assert_eq!(&body[..], b"{\"A\":[1,2],\"B\":[]}");
        assert_eq!(
            &super::object(b"{\"A\":[", &[], b"],\"B\":", b"[]")[..],
            b"{\"A\":[],\"B\":[]}"
        );
    }
}
