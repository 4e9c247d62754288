//! A small JSON writer for the library (which has no serde): values are written in order into
//! one string, objects and arrays opened and closed by the caller, commas placed here. One
//! escaping policy for every string written.
use std::fmt::Write as _;

/// JSON text being written.
pub struct Writer {
    out: String,
    /// A value was just completed at the current level: the next one needs a comma first.
    comma: bool,
}

/// What can be written as one JSON value.
pub trait Value {
    fn write_to(&self, out: &mut String);
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn write_to(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
number!(u8, u16, u32, u64, usize, i32, i64, isize, bool);

impl Value for str {
    fn write_to(&self, out: &mut String) {
        escape_into(out, self);
    }
}

impl Value for String {
    fn write_to(&self, out: &mut String) {
        escape_into(out, self);
    }
}

impl<T: Value + ?Sized> Value for &T {
    fn write_to(&self, out: &mut String) {
        (**self).write_to(out);
    }
}

impl Writer {
    pub fn with_capacity(bytes: usize) -> Writer {
        Writer { out: String::with_capacity(bytes), comma: false }
    }

    fn separate(&mut self) {
        if self.comma {
            self.out.push(',');
        }
    }

    /// Opens an object where a value goes (after a key, in an array, or at the top).
    pub fn begin_object(&mut self) -> &mut Self {
        self.separate();
        self.out.push('{');
        self.comma = false;
        self
    }

    pub fn end_object(&mut self) -> &mut Self {
        self.out.push('}');
        self.comma = true;
        self
    }

    pub fn begin_array(&mut self) -> &mut Self {
        self.separate();
        self.out.push('[');
        self.comma = false;
        self
    }

    pub fn end_array(&mut self) -> &mut Self {
        self.out.push(']');
        self.comma = true;
        self
    }

    /// The key of the next member of the open object; its value follows.
    pub fn key(&mut self, k: &str) -> &mut Self {
        self.separate();
        escape_into(&mut self.out, k);
        self.out.push(':');
        self.comma = false;
        self
    }

    /// One value: a member's after `key`, or an array's element.
    pub fn value(&mut self, v: impl Value) -> &mut Self {
        self.separate();
        v.write_to(&mut self.out);
        self.comma = true;
        self
    }

    /// A member of the open object.
    pub fn field(&mut self, k: &str, v: impl Value) -> &mut Self {
        self.key(k).value(v)
    }

    /// An array of numbers, as a value.
    pub fn numbers(&mut self, v: &[u64]) -> &mut Self {
        self.begin_array();
        for x in v {
            self.value(*x);
        }
        self.end_array()
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The characters written as `\uXXXX`: the control characters JSON requires, and DEL, U+2028
/// and U+2029, which some readers take for line ends (a process name is the process's own and
/// must not reach a terminal or a JavaScript reader raw). The CLI's serde output escapes the same.
pub fn escaped(c: char) -> bool {
    (c as u32) < 0x20 || matches!(c, '\u{7f}' | '\u{2028}' | '\u{2029}')
}

/// Appends `s` as a JSON string literal: quotes, backslashes and control characters escaped
/// (and DEL, U+2028 and U+2029, which some readers take for line ends); anything else passes
/// through, since `s` is UTF-8 already.
pub fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if escaped(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_and_nesting() {
        let mut w = Writer::with_capacity(64);
        w.begin_object()
            .field("a", 1u64)
            .key("b")
            .begin_array()
            .numbers(&[1, 2])
            .begin_object()
            .end_object()
            .end_array()
            .field("c", true)
            .key("d")
            .begin_object()
            .field("e", -1i64)
            .end_object();
        w.end_object();
        assert_eq!(w.finish(), r#"{"a":1,"b":[[1,2],{}],"c":true,"d":{"e":-1}}"#);
    }

    #[test]
    fn escapes() {
        let mut s = String::new();
        escape_into(&mut s, "a\"b\\c\n\x01\x7f\u{2028}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001\\u007f\\u2028é\"");
        let mut w = Writer::with_capacity(8);
        w.begin_object().field("k\"", "v\t".to_string()).end_object();
        assert_eq!(w.finish(), "{\"k\\\"\":\"v\\t\"}");
    }

    #[test]
    fn extremes() {
        let mut w = Writer::with_capacity(8);
        w.begin_array().value(u64::MAX).value(i64::MIN).value(false).end_array();
        assert_eq!(w.finish(), "[18446744073709551615,-9223372036854775808,false]");
    }
}
