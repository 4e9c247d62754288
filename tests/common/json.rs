//! A small, strict JSON reader (no serde in this workspace): the CLI and the library write JSON
//! by hand, and reading it strictly checks that too (literals, numbers, escapes, control
//! characters, duplicate keys).
//!
//! Two ways to read a value: strict accessors that fail the test with a message when a field is
//! missing or of another type (`field`, `int`, `num`, `str`, `array`), for checking a contract;
//! and lenient navigation through deep trees (`get`, `at`, `arr`, `u64`, `i64`, `bool`,
//! `as_str`), where what is missing reads as null, 0, false or empty.
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number's text, as written (integers must stay exact).
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

static NULL: Json = Json::Null;

impl Json {
    pub fn parse(s: &str) -> Result<Json, String> {
        let b = s.as_bytes();
        let mut i = 0;
        let v = value(b, &mut i)?;
        skip_ws(b, &mut i);
        if i != b.len() {
            return Err(format!("trailing text at byte {i}: {:?}", &s[i..s.len().min(i + 40)]));
        }
        Ok(v)
    }

    // Strict.

    /// The field `key` of an object.
    pub fn field(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m.get(key).unwrap_or_else(|| panic!("no field {key:?} in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        matches!(self, Json::Obj(m) if m.contains_key(key))
    }

    /// An integer field, exactly.
    pub fn int(&self, key: &str) -> i64 {
        match self.field(key) {
            Json::Num(n) => n.parse::<i64>().unwrap_or_else(|_| panic!("{key} = {n} is not an integer")),
            v => panic!("{key} is not a number: {v:?}"),
        }
    }

    pub fn num(&self, key: &str) -> f64 {
        match self.field(key) {
            Json::Num(n) => n.parse::<f64>().unwrap(),
            v => panic!("{key} is not a number: {v:?}"),
        }
    }

    pub fn str(&self, key: &str) -> &str {
        match self.field(key) {
            Json::Str(s) => s,
            v => panic!("{key} is not a string: {v:?}"),
        }
    }

    pub fn array(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            _ => panic!("not an array: {self:?}"),
        }
    }

    // Lenient.

    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m.get(key).unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    pub fn at(&self, i: usize) -> &Json {
        self.arr().get(i).unwrap_or(&NULL)
    }

    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            _ => &[],
        }
    }

    pub fn u64(&self) -> u64 {
        match self {
            Json::Num(s) => s.parse().unwrap_or(0),
            _ => 0,
        }
    }

    pub fn i64(&self) -> i64 {
        match self {
            Json::Num(s) => s.parse().unwrap_or(0),
            _ => 0,
        }
    }

    pub fn bool(&self) -> bool {
        matches!(self, Json::Bool(true))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => "",
        }
    }
}

fn skip_ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && matches!(b[*i], b' ' | b'\n' | b'\r' | b'\t') {
        *i += 1;
    }
}

fn value(b: &[u8], i: &mut usize) -> Result<Json, String> {
    skip_ws(b, i);
    let rest = &b[*i..];
    let lit = |w: &str, v: Json, i: &mut usize| -> Result<Json, String> {
        if rest.starts_with(w.as_bytes()) {
            *i += w.len();
            Ok(v)
        } else {
            Err(format!("bad literal at byte {i}"))
        }
    };
    match rest.first() {
        None => Err("unexpected end".into()),
        Some(b'n') => lit("null", Json::Null, i),
        Some(b't') => lit("true", Json::Bool(true), i),
        Some(b'f') => lit("false", Json::Bool(false), i),
        Some(b'"') => string(b, i).map(Json::Str),
        Some(b'[') => {
            *i += 1;
            let mut v = Vec::new();
            skip_ws(b, i);
            if b.get(*i) == Some(&b']') {
                *i += 1;
                return Ok(Json::Arr(v));
            }
            loop {
                v.push(value(b, i)?);
                skip_ws(b, i);
                match b.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b']') => {
                        *i += 1;
                        return Ok(Json::Arr(v));
                    }
                    _ => return Err(format!("expected , or ] at byte {i}")),
                }
            }
        }
        Some(b'{') => {
            *i += 1;
            let mut m = BTreeMap::new();
            skip_ws(b, i);
            if b.get(*i) == Some(&b'}') {
                *i += 1;
                return Ok(Json::Obj(m));
            }
            loop {
                skip_ws(b, i);
                let k = string(b, i)?;
                skip_ws(b, i);
                if b.get(*i) != Some(&b':') {
                    return Err(format!("expected : at byte {i}"));
                }
                *i += 1;
                let v = value(b, i)?;
                if m.insert(k.clone(), v).is_some() {
                    return Err(format!("duplicate key {k:?}"));
                }
                skip_ws(b, i);
                match b.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b'}') => {
                        *i += 1;
                        return Ok(Json::Obj(m));
                    }
                    _ => return Err(format!("expected , or }} at byte {i}")),
                }
            }
        }
        Some(c) if *c == b'-' || c.is_ascii_digit() => {
            let start = *i;
            while *i < b.len() && matches!(b[*i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                *i += 1;
            }
            let t = std::str::from_utf8(&b[start..*i]).unwrap().to_string();
            t.parse::<f64>().map_err(|_| format!("bad number {t:?}"))?;
            if t.starts_with("0") && t.len() > 1 && !t.starts_with("0.") || t.starts_with("-0") && t.len() > 2 && !t.starts_with("-0.") || t.ends_with('.') {
                return Err(format!("not a JSON number: {t:?}"));
            }
            Ok(Json::Num(t))
        }
        Some(c) => Err(format!("unexpected {:?} at byte {i}", *c as char)),
    }
}

fn string(b: &[u8], i: &mut usize) -> Result<String, String> {
    if b.get(*i) != Some(&b'"') {
        return Err(format!("expected a string at byte {i}"));
    }
    *i += 1;
    let mut out = Vec::new();
    loop {
        let c = *b.get(*i).ok_or("unterminated string")?;
        *i += 1;
        match c {
            b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
            b'\\' => {
                let e = *b.get(*i).ok_or("bad escape")?;
                *i += 1;
                match e {
                    b'"' | b'\\' | b'/' => out.push(e),
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'u' => {
                        let h = std::str::from_utf8(b.get(*i..*i + 4).ok_or("bad \\u")?).unwrap();
                        let cp = u32::from_str_radix(h, 16).map_err(|_| "bad \\u")?;
                        *i += 4;
                        let ch = char::from_u32(cp).ok_or("surrogate \\u not expected here")?;
                        out.extend(ch.to_string().as_bytes());
                    }
                    _ => return Err(format!("bad escape \\{}", e as char)),
                }
            }
            c if c < 0x20 => return Err(format!("raw control character {c:#x} in a string")),
            c => out.push(c),
        }
    }
}
