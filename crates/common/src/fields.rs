//! The table of the stats page's fields, and the macro that declares each field once: the
//! `#[repr(C)]` struct and its table come from the same declaration, and everything that shows
//! a field (the CLI's JSON, Prometheus metrics and `stat`, include/memtrim.h) reads the table.
//!
//! A declaration, within a section (`stat` shows sections as headings, the C header as
//! comments):
//!
//! `name: type, Unit, Kind, "help"` then optional clauses, each after a comma:
//! - `json "name"`: its JSON name, when not the field's name (a contract: never renamed);
//! - `metric "name"` or `metric none`: its Prometheus family, when not the one derived from the
//!   name, unit and kind (see the CLI's metrics.rs), or none;
//! - `when |s| ...`: the value means something only when this holds (metrics leave the sample
//!   out, `stat` shows `-`, a state is null in JSON);
//! - `label "name" |s| ...`: the metric's sample carries this label, and is left out without it.
use crate::stats::Stats;

/// How a field is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    U32,
    U64,
    /// NUL-padded text of this many bytes.
    Text(usize),
    /// This many u64s, one per label value (see [`Kind::Counters`]).
    U64s(usize),
}

/// The Rust types a field may have.
pub trait FieldType {
    const TYPE: Type;
}

impl FieldType for u32 {
    const TYPE: Type = Type::U32;
}

impl FieldType for u64 {
    const TYPE: Type = Type::U64;
}

impl<const N: usize> FieldType for [u8; N] {
    const TYPE: Type = Type::Text(N);
}

impl<const N: usize> FieldType for [u64; N] {
    const TYPE: Type = Type::U64s(N);
}

/// What a number counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// An identifier or a code.
    None,
    Count,
    Bytes,
    /// A duration in microseconds.
    Us,
    /// A duration in milliseconds.
    Ms,
    /// A unix time in milliseconds.
    UnixMs,
    /// Events per second.
    PerSec,
    /// A ratio in thousandths; u64::MAX means off.
    Permille,
}

/// What a field is, which decides how it is shown.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// The page's check word: never shown.
    Check,
    /// Who the process is (labels, not figures).
    Id,
    /// Only grows.
    Counter,
    Gauge,
    /// 0 or 1.
    Flag,
    /// A code, shown by its name (None: a code without one).
    State(fn(u64) -> Option<&'static str>),
    /// Counters, one per name, under the label named first.
    Counters(&'static str, &'static [&'static str]),
}

/// A page's Prometheus family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Named after the field (see the CLI's metrics.rs).
    Derived,
    Named(&'static str),
    None,
}

/// The value of a metric's label, from the stats (None: no sample).
pub type LabelValue = fn(&Stats) -> Option<&'static str>;

/// One field of the stats page.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub section: &'static str,
    /// Bytes from the start of `Stats`.
    pub offset: usize,
    pub ty: Type,
    pub unit: Unit,
    pub kind: Kind,
    pub help: &'static str,
    pub json: &'static str,
    pub metric: Metric,
    pub when: Option<fn(&Stats) -> bool>,
    pub label: Option<(&'static str, LabelValue)>,
}

impl Type {
    pub const fn size(self) -> usize {
        match self {
            Type::U32 => 4,
            Type::U64 => 8,
            Type::Text(n) => n,
            Type::U64s(n) => 8 * n,
        }
    }
}

impl Field {
    fn bytes<'a>(&self, s: &'a Stats) -> &'a [u8] {
        s.as_bytes().get(self.offset..self.offset + self.ty.size()).unwrap_or(&[])
    }

    /// The value of a U32 or U64 field (0 for others).
    pub fn number(&self, s: &Stats) -> u64 {
        let b = self.bytes(s);
        match self.ty {
            Type::U32 => b.try_into().map_or(0, |a| u32::from_ne_bytes(a) as u64),
            Type::U64 => b.try_into().map_or(0, u64::from_ne_bytes),
            _ => 0,
        }
    }

    /// The values of a U64s field.
    pub fn numbers(&self, s: &Stats) -> Vec<u64> {
        match self.ty {
            Type::U64s(_) => self.bytes(s).chunks_exact(8).filter_map(|c| c.try_into().ok()).map(u64::from_ne_bytes).collect(),
            _ => Vec::new(),
        }
    }

    /// The text of a Text field, up to its first NUL.
    pub fn text(&self, s: &Stats) -> String {
        let b = self.bytes(s);
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    }

    /// Whether the page's writer wrote this field: an older memtrim's page is shorter
    /// (`stats_bytes` itself is the reader's).
    pub fn written(&self, s: &Stats) -> bool {
        s.stats_bytes == 0 || self.offset + self.ty.size() <= s.stats_bytes as usize || self.offset == core::mem::offset_of!(Stats, stats_bytes)
    }

    /// Whether the value means something now (see `when`).
    pub fn applies(&self, s: &Stats) -> bool {
        self.written(s) && self.when.is_none_or(|w| w(s))
    }

    /// The name of a State field's value, if it has one and applies.
    pub fn state(&self, s: &Stats) -> Option<&'static str> {
        match self.kind {
            Kind::State(name) if self.applies(s) => name(self.number(s)),
            _ => None,
        }
    }
}

/// The first of its arguments: a clause given, else the default.
macro_rules! first {
    ($a:expr $(, $b:expr)?) => {
        $a
    };
}

macro_rules! metric_clause {
    () => {
        $crate::fields::Metric::Derived
    };
    (none) => {
        $crate::fields::Metric::None
    };
    ($name:literal) => {
        $crate::fields::Metric::Named($name)
    };
}

/// Declares the page's stats: sections of fields (see the module comment).
macro_rules! stats_fields {
    ($( $section:literal { $(
        $name:ident : $ty:ty, $unit:ident, $kind:expr, $help:literal
        $(, json $json:literal)? $(, metric $metric:tt)? $(, when $when:expr)? $(, label $label:literal $labelf:expr)?;
    )* } )*) => {
        /// Everything the worker publishes, declared in crates/common/src/stats.rs. Every field
        /// is a u64, a pair of u32s, or whole u64s, so that the check word can be computed over
        /// the struct as u64s.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct Stats {
            $( $( #[doc = $help] pub $name: $ty, )* )*
        }

        /// The table of `Stats`' fields, in their order in the page.
        pub const FIELDS: &[$crate::fields::Field] = &[ $( $( $crate::fields::Field {
            name: stringify!($name),
            section: $section,
            offset: core::mem::offset_of!(Stats, $name),
            ty: <$ty as $crate::fields::FieldType>::TYPE,
            unit: $crate::fields::Unit::$unit,
            kind: $kind,
            help: $help,
            json: first!($($json,)? stringify!($name)),
            metric: metric_clause!($($metric)?),
            when: first!($(Some($when),)? None),
            label: first!($(Some(($label, $labelf)),)? None),
        }, )* )* ];
    };
}
