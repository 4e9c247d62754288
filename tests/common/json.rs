//! Reading the JSON that the CLI and the library write, with serde_json, strictly: besides
//! serde_json's own checks (literals, numbers, escapes, control characters), a key twice in an
//! object is an error, since both sides write their JSON by hand.
//!
//! Two ways to read a value: strict accessors that fail the test with a message when a field is
//! missing or of another type (`field`, `int`, `num`, `str`, `array`), for checking a contract;
//! and lenient navigation through deep trees (serde_json's indexing, `v["a"][0]`, which reads
//! what is missing as null, then `at`, `arr`, `u64`, `i64`, `bool`), where null reads as 0,
//! false or empty.
use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

pub type Json = Value;

/// A value read with no key twice in any of its objects.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
                Ok(Strict(v.into()))
            }
            fn visit_unit<E>(self) -> Result<Strict, E> {
                Ok(Strict(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Strict, A::Error> {
                let mut v = Vec::new();
                while let Some(Strict(x)) = s.next_element()? {
                    v.push(x);
                }
                Ok(Strict(Value::Array(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Strict, A::Error> {
                let mut o = Map::new();
                while let Some(k) = m.next_key::<String>()? {
                    let Strict(v) = m.next_value()?;
                    if o.contains_key(&k) {
                        return Err(A::Error::custom(format!("duplicate key {k:?}")));
                    }
                    o.insert(k, v);
                }
                Ok(Strict(Value::Object(o)))
            }
        }
        d.deserialize_any(V)
    }
}

static NULL: Json = Json::Null;

pub trait JsonExt {
    /// One JSON value, strictly (see above).
    fn parse(s: &str) -> Result<Json, String>;
    fn field(&self, key: &str) -> &Json;
    fn has(&self, key: &str) -> bool;
    fn int(&self, key: &str) -> i64;
    fn num(&self, key: &str) -> f64;
    fn str(&self, key: &str) -> &str;
    fn array(&self) -> &[Json];
    fn at(&self, i: usize) -> &Json;
    fn arr(&self) -> &[Json];
    fn u64(&self) -> u64;
    fn i64(&self) -> i64;
    fn bool(&self) -> bool;
}

impl JsonExt for Json {
    fn parse(s: &str) -> Result<Json, String> {
        serde_json::from_str::<Strict>(s).map(|v| v.0).map_err(|e| e.to_string())
    }

    // Strict.

    /// The field `key` of an object.
    fn field(&self, key: &str) -> &Json {
        match self {
            Json::Object(m) => m.get(key).unwrap_or_else(|| panic!("no field {key:?} in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }

    fn has(&self, key: &str) -> bool {
        matches!(self, Json::Object(m) if m.contains_key(key))
    }

    /// An integer field, exactly.
    fn int(&self, key: &str) -> i64 {
        match self.field(key) {
            Json::Number(n) => n.as_i64().unwrap_or_else(|| panic!("{key} = {n} is not an integer")),
            v => panic!("{key} is not a number: {v:?}"),
        }
    }

    fn num(&self, key: &str) -> f64 {
        match self.field(key) {
            Json::Number(n) => n.as_f64().unwrap_or_else(|| panic!("{key} = {n} is not a number")),
            v => panic!("{key} is not a number: {v:?}"),
        }
    }

    fn str(&self, key: &str) -> &str {
        match self.field(key) {
            Json::String(s) => s,
            v => panic!("{key} is not a string: {v:?}"),
        }
    }

    fn array(&self) -> &[Json] {
        match self {
            Json::Array(v) => v,
            _ => panic!("not an array: {self:?}"),
        }
    }

    // Lenient.

    fn at(&self, i: usize) -> &Json {
        self.arr().get(i).unwrap_or(&NULL)
    }

    fn arr(&self) -> &[Json] {
        match self {
            Json::Array(v) => v,
            _ => &[],
        }
    }

    fn u64(&self) -> u64 {
        self.as_u64().unwrap_or(0)
    }

    fn i64(&self) -> i64 {
        self.as_i64().unwrap_or(0)
    }

    fn bool(&self) -> bool {
        self.as_bool().unwrap_or(false)
    }
}
