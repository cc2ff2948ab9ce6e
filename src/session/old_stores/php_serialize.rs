//! PHP's `serialize()` format and its session encodings (`php` handler: `name|<value>` repeated;
//! `php_serialize` handler: one serialized array), decoded into JSON so identity mappings can
//! point into them. The bytes come from a store we do not control: bounded, never panics.

use serde_json::{Map, Number, Value};

/// Deeper nesting than this is refused (PHP's own default limit is far higher, but sessions are
/// shallow and the parser recurses).
const MAX_DEPTH: usize = 128;
/// Values produced in one decode, references expanded included: bounds the work a hostile
/// payload can cause (`r:`/`R:` can otherwise copy a subtree exponentially often).
const MAX_VALUES: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhpError {
    #[error("malformed PHP serialized data at byte {0}")]
    Malformed(usize),
    #[error("PHP serialized data nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("PHP serialized data expands to more than {MAX_VALUES} values")]
    TooLarge,
}

/// One `serialize()` value; the whole input must be that value.
pub fn unserialize(input: &[u8]) -> Result<Value, PhpError> {
    let mut parser = Parser::new(input);
    let value = parser.value(0)?;
    if parser.pos != input.len() {
        return Err(PhpError::Malformed(parser.pos));
    }
    Ok(value)
}

/// A session in the `php` serialize_handler format (PHP's default): an object of its variables.
pub fn decode_php_session(input: &[u8]) -> Result<Value, PhpError> {
    let mut parser = Parser::new(input);
    let mut vars = Map::new();
    while parser.pos < input.len() {
        let rest = input.get(parser.pos..).unwrap_or_default();
        // Like PHP's decoder, a tail without a `|` ends the session rather than failing it.
        let Some(bar) = rest.iter().position(|&b| b == b'|') else {
            break;
        };
        let name = String::from_utf8_lossy(&rest[..bar]).into_owned();
        parser.pos += bar + 1;
        let value = parser.value(0)?;
        vars.insert(name, value);
    }
    Ok(Value::Object(vars))
}

/// A session written by either handler. `php_serialize` output is one array (`a:…`), which a
/// `php`-handler session cannot be (its first variable name would have to parse as a whole
/// array too), so it is tried first.
pub fn decode_session(input: &[u8]) -> Result<Value, PhpError> {
    if input.starts_with(b"a:") {
        if let Ok(value) = unserialize(input) {
            return Ok(match value {
                // An empty `$_SESSION` serializes as an empty array.
                Value::Array(items) if items.is_empty() => Value::Object(Map::new()),
                other => other,
            });
        }
    }
    decode_php_session(input)
}

enum Key {
    Int(i64),
    Str(String),
}

impl Key {
    fn into_string(self) -> String {
        match self {
            Key::Int(n) => n.to_string(),
            Key::Str(s) => s,
        }
    }
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    /// Byte range of every value read so far, numbered as PHP numbers them for `r:`/`R:`
    /// (from 1, container before contents, keys not counted). `None` while the value is still
    /// being read: a reference to it is a cycle.
    slots: Vec<Option<(usize, usize)>>,
    /// False while re-reading a referenced value: its values already have their numbers.
    numbering: bool,
    /// Slots being re-read: a reference back into one of them is a cycle.
    expanding: Vec<usize>,
    values: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8]) -> Parser<'a> {
        Parser {
            input,
            pos: 0,
            slots: Vec::new(),
            numbering: true,
            expanding: Vec::new(),
            values: 0,
        }
    }

    fn malformed<T>(&self) -> Result<T, PhpError> {
        Err(PhpError::Malformed(self.pos))
    }

    fn byte(&mut self) -> Result<u8, PhpError> {
        let Some(&b) = self.input.get(self.pos) else {
            return self.malformed();
        };
        self.pos += 1;
        Ok(b)
    }

    fn expect(&mut self, expected: u8) -> Result<(), PhpError> {
        match self.input.get(self.pos) {
            Some(&b) if b == expected => {
                self.pos += 1;
                Ok(())
            }
            _ => self.malformed(),
        }
    }

    /// The bytes up to `end` (not included); moves past `end`.
    fn until(&mut self, end: u8) -> Result<&'a [u8], PhpError> {
        let input: &'a [u8] = self.input;
        let rest = input.get(self.pos..).unwrap_or_default();
        let Some(len) = rest.iter().position(|&b| b == end) else {
            return self.malformed();
        };
        self.pos += len + 1;
        Ok(&rest[..len])
    }

    /// An unsigned decimal count or length, then `end`.
    fn count(&mut self, end: u8) -> Result<usize, PhpError> {
        let start = self.pos;
        let digits = self.until(end)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(PhpError::Malformed(start));
        }
        std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or(PhpError::Malformed(start))
    }

    /// A signed decimal integer, then `end`.
    fn int(&mut self, end: u8) -> Result<i64, PhpError> {
        let start = self.pos;
        let text = self.until(end)?;
        let digits = text.strip_prefix(b"-").or(text.strip_prefix(b"+"));
        let digits = digits.unwrap_or(text);
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(PhpError::Malformed(start));
        }
        std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(PhpError::Malformed(start))
    }

    /// `<len>:"<len bytes>"`: the length counts bytes, not characters.
    fn string_body(&mut self) -> Result<&'a [u8], PhpError> {
        let len = self.count(b':')?;
        self.expect(b'"')?;
        let input: &'a [u8] = self.input;
        let end = self.pos.checked_add(len).filter(|&end| end <= input.len());
        let Some(end) = end else {
            return self.malformed();
        };
        let bytes = &input[self.pos..end];
        self.pos = end;
        self.expect(b'"')?;
        Ok(bytes)
    }

    fn value(&mut self, depth: usize) -> Result<Value, PhpError> {
        if depth > MAX_DEPTH {
            return Err(PhpError::TooDeep);
        }
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(PhpError::TooLarge);
        }
        let start = self.pos;
        let tag = self.byte()?;
        // PHP numbers every value but `R:` (which aliases an earlier one).
        let slot = (self.numbering && tag != b'R').then(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let value = match tag {
            b'N' => {
                self.expect(b';')?;
                Value::Null
            }
            b'b' => {
                self.expect(b':')?;
                let value = match self.byte()? {
                    b'0' => false,
                    b'1' => true,
                    _ => return self.malformed(),
                };
                self.expect(b';')?;
                Value::Bool(value)
            }
            b'i' => {
                self.expect(b':')?;
                Value::from(self.int(b';')?)
            }
            b'd' => {
                self.expect(b':')?;
                let text = self.until(b';')?;
                let number = std::str::from_utf8(text)
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .ok_or(PhpError::Malformed(start))?;
                // INF and NAN have no JSON form.
                Number::from_f64(number).map_or(Value::Null, Value::Number)
            }
            b's' => {
                self.expect(b':')?;
                let bytes = self.string_body()?;
                self.expect(b';')?;
                Value::String(String::from_utf8_lossy(bytes).into_owned())
            }
            // PHP 8.1 enum case, `E:<len>:"Class:Case";`: kept as its name.
            b'E' => {
                self.expect(b':')?;
                let bytes = self.string_body()?;
                self.expect(b';')?;
                Value::String(String::from_utf8_lossy(bytes).into_owned())
            }
            b'a' => {
                self.expect(b':')?;
                let count = self.count(b':')?;
                self.expect(b'{')?;
                let entries = self.entries(count, depth)?;
                self.expect(b'}')?;
                array_or_object(entries)
            }
            // Objects become maps of their properties; the class name is dropped.
            b'O' => {
                self.expect(b':')?;
                self.string_body()?;
                self.expect(b':')?;
                let count = self.count(b':')?;
                self.expect(b'{')?;
                let entries = self.entries(count, depth)?;
                self.expect(b'}')?;
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(key, value)| (property_name(key.into_string()), value))
                        .collect(),
                )
            }
            // `Serializable` objects carry an opaque class-defined payload: kept as a string.
            b'C' => {
                self.expect(b':')?;
                self.string_body()?;
                self.expect(b':')?;
                let len = self.count(b':')?;
                self.expect(b'{')?;
                let input: &'a [u8] = self.input;
                let end = self.pos.checked_add(len).filter(|&end| end <= input.len());
                let Some(end) = end else {
                    return self.malformed();
                };
                let data = &input[self.pos..end];
                self.pos = end;
                self.expect(b'}')?;
                Value::String(String::from_utf8_lossy(data).into_owned())
            }
            b'r' | b'R' => {
                self.expect(b':')?;
                let number = self.count(b';')?;
                self.reference(number, depth)?
            }
            _ => return Err(PhpError::Malformed(start)),
        };
        if let Some(slot) = slot {
            self.slots[slot] = Some((start, self.pos));
        }
        Ok(value)
    }

    fn entries(&mut self, count: usize, depth: usize) -> Result<Vec<(Key, Value)>, PhpError> {
        // The count is untrusted: do not reserve by it.
        let mut entries = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let key = self.key()?;
            let value = self.value(depth + 1)?;
            entries.push((key, value));
        }
        Ok(entries)
    }

    fn key(&mut self) -> Result<Key, PhpError> {
        match self.byte()? {
            b'i' => {
                self.expect(b':')?;
                Ok(Key::Int(self.int(b';')?))
            }
            b's' => {
                self.expect(b':')?;
                let bytes = self.string_body()?;
                self.expect(b';')?;
                Ok(Key::Str(String::from_utf8_lossy(bytes).into_owned()))
            }
            _ => Err(PhpError::Malformed(self.pos - 1)),
        }
    }

    /// A copy of value number `number`, read again from its bytes; `null` for a cycle.
    fn reference(&mut self, number: usize, depth: usize) -> Result<Value, PhpError> {
        let index = number.checked_sub(1).ok_or(PhpError::Malformed(self.pos))?;
        let Some(slot) = self.slots.get(index) else {
            return self.malformed();
        };
        let Some((start, _)) = *slot else {
            return Ok(Value::Null);
        };
        if self.expanding.contains(&index) {
            return Ok(Value::Null);
        }
        let (pos, numbering) = (self.pos, self.numbering);
        self.pos = start;
        self.numbering = false;
        self.expanding.push(index);
        let value = self.value(depth + 1);
        self.expanding.pop();
        self.pos = pos;
        self.numbering = numbering;
        value
    }
}

/// Private (`\0Class\0name`) and protected (`\0*\0name`) property names, without the marker.
fn property_name(name: String) -> String {
    match name
        .strip_prefix('\0')
        .and_then(|rest| rest.split_once('\0'))
    {
        Some((_, property)) => property.to_string(),
        None => name,
    }
}

/// PHP arrays are lists when their keys are 0..n-1 in order (as `json_encode` decides).
fn array_or_object(entries: Vec<(Key, Value)>) -> Value {
    let is_list = entries.iter().enumerate().all(|(i, (key, _))| match key {
        Key::Int(n) => usize::try_from(*n).ok() == Some(i),
        // PHP turns canonical numeric string keys into integer keys.
        Key::Str(s) => s.parse::<usize>().ok() == Some(i) && s == &i.to_string(),
    });
    if is_list {
        Value::Array(entries.into_iter().map(|(_, value)| value).collect())
    } else {
        Value::Object(
            entries
                .into_iter()
                .map(|(key, value)| (key.into_string(), value))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn php_handler_session() {
        let doc = decode_php_session(br#"user|s:5:"carol";roles|a:1:{i:0;s:4:"user";}"#).unwrap();
        assert_eq!(doc, json!({"user": "carol", "roles": ["user"]}));
    }

    #[test]
    fn scalars() {
        assert_eq!(unserialize(b"N;").unwrap(), Value::Null);
        assert_eq!(unserialize(b"b:1;").unwrap(), json!(true));
        assert_eq!(unserialize(b"b:0;").unwrap(), json!(false));
        assert_eq!(unserialize(b"i:-42;").unwrap(), json!(-42));
        assert_eq!(
            unserialize(b"i:9223372036854775807;").unwrap(),
            json!(i64::MAX)
        );
        assert_eq!(unserialize(b"d:0.5;").unwrap(), json!(0.5));
        assert_eq!(unserialize(b"d:1.0E+25;").unwrap(), json!(1.0e25));
        assert_eq!(unserialize(b"d:INF;").unwrap(), Value::Null);
        assert_eq!(unserialize(b"d:NAN;").unwrap(), Value::Null);
        assert_eq!(unserialize(br#"s:0:"";"#).unwrap(), json!(""));
    }

    #[test]
    fn string_lengths_are_bytes() {
        // "é" is 2 bytes, "日本" 6, the emoji 4: PHP counts bytes.
        assert_eq!(unserialize(r#"s:2:"é";"#.as_bytes()).unwrap(), json!("é"));
        let doc = decode_php_session(r#"name|s:6:"日本";tag|s:4:"🦀";x|i:1;"#.as_bytes()).unwrap();
        assert_eq!(doc, json!({"name": "日本", "tag": "🦀", "x": 1}));
        // A character count where bytes are meant is malformed.
        assert!(unserialize(r#"s:1:"é";"#.as_bytes()).is_err());
    }

    #[test]
    fn strings_may_hold_delimiters() {
        let doc = decode_php_session(br#"a|s:7:"x|y";}"";b|i:2;"#).unwrap();
        assert_eq!(doc, json!({"a": "x|y\";}\"", "b": 2}));
    }

    #[test]
    fn arrays_lists_and_maps() {
        assert_eq!(unserialize(b"a:0:{}").unwrap(), json!([]));
        let list = unserialize(br#"a:2:{i:0;s:1:"a";i:1;s:1:"b";}"#).unwrap();
        assert_eq!(list, json!(["a", "b"]));
        // Out of order or sparse keys are a map, as in json_encode.
        let sparse = unserialize(br#"a:2:{i:1;s:1:"a";i:0;s:1:"b";}"#).unwrap();
        assert_eq!(sparse, json!({"1": "a", "0": "b"}));
        let map =
            unserialize(br#"a:2:{s:2:"id";i:7;s:5:"roles";a:2:{i:0;s:5:"admin";i:1;s:4:"user";}}"#)
                .unwrap();
        assert_eq!(map, json!({"id": 7, "roles": ["admin", "user"]}));
    }

    #[test]
    fn objects_are_maps_of_properties() {
        // class User { public $id = 5; protected $email = "a@x"; private $role = "admin"; }
        let input = b"O:4:\"User\":3:{s:2:\"id\";i:5;s:8:\"\0*\0email\";s:3:\"a@x\";s:10:\"\0User\0role\";s:5:\"admin\";}";
        assert_eq!(
            unserialize(input).unwrap(),
            json!({"id": 5, "email": "a@x", "role": "admin"})
        );
        let laravel =
            br#"login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d|i:17;_token|s:3:"abc";"#;
        assert_eq!(
            decode_php_session(laravel).unwrap()
                ["login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d"],
            json!(17)
        );
    }

    #[test]
    fn enums_and_custom_serializable() {
        assert_eq!(
            unserialize(br#"E:11:"Role:Editor";"#).unwrap(),
            json!("Role:Editor")
        );
        assert_eq!(
            unserialize(br#"C:3:"Foo":5:{hello}"#).unwrap(),
            json!("hello")
        );
    }

    #[test]
    fn php_serialize_handler() {
        let doc =
            decode_session(br#"a:2:{s:4:"user";s:5:"carol";s:5:"roles";a:1:{i:0;s:4:"user";}}"#)
                .unwrap();
        assert_eq!(doc, json!({"user": "carol", "roles": ["user"]}));
        assert_eq!(decode_session(b"a:0:{}").unwrap(), json!({}));
        // The php handler still works through the same entry point.
        assert_eq!(decode_session(br#"a|i:1;"#).unwrap(), json!({"a": 1}));
    }

    #[test]
    fn references() {
        // $a = ["x"]; $s = ["one" => $a, "two" => &$s["one"]] style: r: copies, R: aliases.
        let doc = unserialize(br#"a:2:{s:3:"one";a:1:{i:0;s:1:"x";}s:3:"two";r:2;}"#).unwrap();
        assert_eq!(doc, json!({"one": ["x"], "two": ["x"]}));
        let doc = decode_php_session(br#"u|s:3:"bob";v|R:1;"#).unwrap();
        assert_eq!(doc, json!({"u": "bob", "v": "bob"}));
        // A reference to the array that contains it is a cycle: null, not a loop.
        let doc = unserialize(br#"a:1:{i:0;R:1;}"#).unwrap();
        assert_eq!(doc, json!([null]));
        assert!(unserialize(b"a:1:{i:0;r:0;}").is_err());
        assert!(unserialize(b"a:1:{i:0;r:9;}").is_err());
    }

    #[test]
    fn reference_bombs_are_bounded() {
        // Each level holds two references to the previous one: 2^40 values if expanded.
        let mut input = String::from("a:41:{i:0;s:1:\"x\";");
        for i in 1..=40 {
            // Level i is value 3i (the outer array is 1, "x" is 2, each level adds 3).
            let previous = if i == 1 { 2 } else { 3 * i - 3 };
            input.push_str(&format!("i:{i};a:2:{{i:0;r:{previous};i:1;r:{previous};}}"));
        }
        input.push('}');
        assert_eq!(unserialize(input.as_bytes()), Err(PhpError::TooLarge));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for input in [
            &b""[..],
            b"s:5:\"abc\";",
            b"s:99999999999999999999:\"a\";",
            b"s:18446744073709551615:\"a\";",
            b"a:3:{i:0;i:1;}",
            b"a:1:{d:0.5;i:1;}",
            b"i:;",
            b"i:12a;",
            b"i:99999999999999999999;",
            b"b:2;",
            b"x:1;",
            b"a:1:{i:0;i:1;",
            b"O:1:\"A\":1:{s:1:\"p\";}",
            b"C:1:\"A\":10:{ab}",
            b"N;N;",
        ] {
            assert!(
                unserialize(input).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert!(decode_php_session(b"user|s:5:\"car").is_err());
        assert!(decode_php_session(b"user|").is_err());
        // PHP ignores a tail without a `|`.
        assert_eq!(decode_php_session(b"a|i:1;junk").unwrap(), json!({"a": 1}));
    }

    #[test]
    fn depth_is_bounded() {
        let input = "a:1:{i:0;".repeat(10_000) + "N;" + &"}".repeat(10_000);
        assert_eq!(unserialize(input.as_bytes()), Err(PhpError::TooDeep));
        let ok = "a:1:{i:0;".repeat(100) + "N;" + &"}".repeat(100);
        assert!(unserialize(ok.as_bytes()).is_ok());
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        assert_eq!(
            unserialize(b"s:2:\"\xff\xfe\";").unwrap(),
            json!("\u{fffd}\u{fffd}")
        );
    }
}
