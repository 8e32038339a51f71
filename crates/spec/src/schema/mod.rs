//! The stack-file language, declared once.
//!
//! Every key is one entry of a [`section!`](crate::section) in `keys/`: its TOML name,
//! the Rust type it reads into, its [`Kind`] (TOML type, range or choices, unit), its
//! default and its doc. From that one entry come the reader (every unknown key, wrong
//! type and out-of-range value reported, with spans, in one run) and, through
//! [`crate::declarations`], the reference in `docs/stack-file.md`, the JSON Schema of
//! `bulwark schema` and `bulwark explain KEY` (crate `reference`). What is left by hand is
//! what relates several keys (`check`).

mod kinds;
mod table;

pub(crate) use kinds::*;
pub use kinds::{DurationRange, StringRule};
pub(crate) use table::{Table, read_defaults};

use toml::Spanned;

use crate::problem::Span;

/// A key after reading.
///
/// `Invalid` (present, but already reported) is kept apart from `Absent` so that checks
/// neither report it again as missing nor silently replace it with its default.
#[derive(Debug)]
pub(crate) enum Field<T> {
    /// Not in the file, and without a default.
    Absent,
    /// Not in the file: the declared default.
    Default(T),
    /// In the file, and reported as wrong.
    Invalid,
    /// In the file, valid, with the span of its value.
    Given(Spanned<T>),
}

impl<T> Field<T> {
    /// The value written in the file, with its span.
    pub fn given(&self) -> Option<&Spanned<T>> {
        match self {
            Field::Given(v) => Some(v),
            _ => None,
        }
    }

    /// Written in the file, valid or not.
    pub fn is_present(&self) -> bool {
        matches!(self, Field::Given(_) | Field::Invalid)
    }

    /// The value in effect: the file's, else the default. `None` when invalid or absent
    /// without a default.
    pub fn value(&self) -> Option<&T> {
        match self {
            Field::Given(v) => Some(v.get_ref()),
            Field::Default(v) => Some(v),
            Field::Absent | Field::Invalid => None,
        }
    }

    /// `build` of the value written in the file: a key left out (or invalid, and reported)
    /// is `Some(None)`; one that failed to build is `None`.
    pub fn built<U>(&self, build: impl FnOnce(&T) -> Option<U>) -> Option<Option<U>> {
        self.given()
            .map_or(Some(None), |v| build(v.get_ref()).map(Some))
    }

    /// The value's span, if written in the file.
    pub fn span(&self) -> Option<Span> {
        self.given().map(Spanned::span)
    }
}

impl<T: Clone> Field<T> {
    /// [`Field::value`], owned.
    pub fn get(&self) -> Option<T> {
        self.value().cloned()
    }

    /// The value in effect, or `absent` for a key left out that has no declared default
    /// (one that depends on other keys); `None` when invalid.
    pub fn or(&self, absent: T) -> Option<T> {
        match self {
            Field::Absent => Some(absent),
            f => f.get(),
        }
    }
}

/// What a key is when the file leaves it out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Omitted {
    /// This value, written as in the file (`"1s"`, `3`, `"p2c"`).
    Value(&'static str),
    /// A value that depends on the table the key is in (probes: `startup` differs).
    ByTable(&'static [(&'static str, &'static str)], &'static str),
    /// Must be given; the text is an example line, or empty to list the choices.
    Required(&'static str),
    /// Nothing: absence has the meaning described.
    Optional(&'static str),
    /// A table whose every key is at its default.
    Table,
}

impl From<&'static str> for Omitted {
    fn from(text: &'static str) -> Self {
        Omitted::Value(text)
    }
}

impl Omitted {
    /// The default's text for `table`.
    pub fn text_for(self, table: &str) -> Option<&'static str> {
        match self {
            Omitted::Value(v) => Some(v),
            Omitted::ByTable(special, otherwise) => Some(
                special
                    .iter()
                    .find(|(t, _)| *t == table)
                    .map_or(otherwise, |(_, v)| v),
            ),
            _ => None,
        }
    }
}

/// One key, as documentation and schema see it.
#[derive(Debug, Clone)]
pub struct Key {
    /// Its name in the table.
    pub name: &'static str,
    /// Its doc comment, one string per line.
    pub doc: &'static [&'static str],
    /// What values it takes.
    pub shape: Shape,
    /// What it is when left out.
    pub default: Omitted,
    /// The version that introduced it.
    pub since: &'static str,
}

/// A sub-table's documentation: its doc and keys.
#[derive(Debug, Clone)]
pub struct TableDoc {
    /// The section's doc comment.
    pub doc: &'static [&'static str],
    /// Its keys, in declaration order.
    pub keys: Vec<Key>,
}

/// The values a key takes, for documentation and schema.
#[derive(Debug, Clone)]
pub enum Shape {
    /// A string.
    String(StringRule),
    /// `true` or `false`.
    Bool,
    /// An integer in `min..=max`.
    Int {
        /// Smallest accepted.
        min: i64,
        /// Largest accepted.
        max: i64,
        /// What it counts.
        unit: &'static str,
    },
    /// A number (an integer is taken as one) in a range.
    Number(NumberRange),
    /// A duration string.
    Duration(DurationRange),
    /// One of these strings.
    Choice(Vec<&'static str>),
    /// A string of this form.
    Text(&'static str),
    /// An array of these.
    List(Box<Shape>),
    /// A table.
    Table(TableDoc),
    /// An array of tables.
    Tables(TableDoc),
    /// A count (an integer, at most `max`) or a percentage string (`"50%"`), as
    /// Kubernetes' `minAvailable` and `maxSurge` take.
    CountOrPercent {
        /// The largest count accepted.
        max: i64,
    },
    /// A table of arbitrary keys (named by `key`), each holding this.
    Map {
        /// How the reference names a key (`NAME`).
        key: &'static str,
        /// What each key holds.
        value: Box<Shape>,
    },
}

/// The numbers a key takes (and, as a [`Kind`], how they are read).
#[derive(Debug, Clone, Copy)]
pub struct NumberRange {
    /// Lower bound.
    pub min: f64,
    /// Upper bound.
    pub max: f64,
    /// The lower bound itself is refused.
    pub min_open: bool,
    /// The upper bound itself is refused.
    pub max_open: bool,
    /// What it measures.
    pub unit: &'static str,
}

/// A table as the rules between keys see it: its span, how messages name it, and the keys
/// written in it with their spans (the `span`, `label` and `written` of every `section!`).
pub(crate) type Place<'a> = (&'a Span, &'a String, &'a Vec<(String, Span, Span)>);

/// A table of the stack file, declared by [`section!`](crate::section).
pub(crate) trait Section: Sized {
    /// Reads the table (or, when `t.map` is `None`, its defaults).
    fn read(t: &Table<'_, '_>, p: &mut crate::problem::Problems) -> Self;
    /// Its doc and keys, for documentation.
    fn table_doc() -> TableDoc;
}

/// Declares a table of the stack file: a struct with one [`Field`] per key, and its
/// [`Section`] implementation. Each key is written once:
///
/// ```text
/// /// Doc of the key (the reference and `bulwark explain` show it).
/// name [as "toml-name"]: RustType = kind, default [, since "0.2"];
/// ```
///
/// `struct XTable => #[derive(..)] pub struct X { .. }` also declares the domain type `X`,
/// with one plain field per key (same name, type and doc) and `XTable::build`: for tables
/// whose keys need nothing but their own checks. `pub struct X: Default` also implements
/// `X::default()`, every key at its declared default.
#[macro_export]
#[doc(hidden)]
macro_rules! section {
    (
        $(#[doc = $tdoc:literal])*
        $vis:vis struct $Name:ident
            $(=> $(#[$dattr:meta])* $dvis:vis struct $Domain:ident $(: $Default:ident)?)? {
            $(
                $(#[doc = $doc:literal])*
                $field:ident $(as $toml:literal)? : $ty:ty = $kind:expr, $default:expr
                    $(, since $since:literal)? ;
            )*
        }
    ) => {
        $crate::section! { @domain $Name [$(#[doc = $tdoc])*]
            [$($(#[$dattr])* $dvis struct $Domain $(: $Default)?)?]
            { $( $(#[doc = $doc])* $field: $ty, )* }
        }

        $(#[doc = $tdoc])*
        #[derive(Debug)]
        $vis struct $Name {
            /// The table's span (its header, or its parent's when left out).
            #[allow(dead_code, reason = "span, label and written serve the checks of some tables only")]
            pub span: $crate::problem::Span,
            /// How messages name the table: `[services.web]`.
            #[allow(dead_code, reason = "see `span`")]
            pub label: String,
            /// The keys written in the file, in file order, with the spans of key and value.
            #[allow(dead_code, reason = "see `span`")]
            pub written: Vec<(String, $crate::problem::Span, $crate::problem::Span)>,
            $( $(#[doc = $doc])* pub $field: $crate::schema::Field<$ty>, )*
        }

        impl $Name {
            /// The table as the rules between keys see it (`check/rules.rs`).
            #[allow(dead_code, reason = "only tables with such rules call it")]
            pub fn place(&self) -> $crate::schema::Place<'_> {
                (&self.span, &self.label, &self.written)
            }
        }

        impl $crate::schema::Section for $Name {
            fn read(t: &$crate::schema::Table<'_, '_>, p: &mut $crate::problem::Problems) -> Self {
                $Name {
                    span: t.span.clone(),
                    label: t.label.clone(),
                    written: t.written(&[$($crate::section!(@name $field $($toml)?)),*], p),
                    $( $field: t.read(
                        $crate::section!(@name $field $($toml)?), &$kind, ($default).into(), p,
                    ), )*
                }
            }

            fn table_doc() -> $crate::schema::TableDoc {
                let keys = vec![$( $crate::schema::Key {
                    name: $crate::section!(@name $field $($toml)?),
                    doc: &[$($doc),*],
                    shape: $crate::schema::Kind::shape(&$kind as &dyn $crate::schema::Kind<Out = $ty>),
                    default: $crate::schema::Omitted::from($default),
                    since: $crate::section!(@since $($since)?),
                } ),*];
                $crate::schema::read_defaults::<Self>(&keys);
                $crate::schema::TableDoc { doc: &[$($tdoc),*], keys }
            }
        }
    };
    (@domain $Name:ident [$($tdoc:tt)*] [] $fields:tt) => {};
    (
        @domain $Name:ident [$($tdoc:tt)*]
        [$(#[$dattr:meta])* $dvis:vis struct $Domain:ident $(: $Default:ident)?]
        { $( $(#[doc = $doc:literal])* $field:ident: $ty:ty, )* }
    ) => {
        $($tdoc)*
        $(#[$dattr])*
        $dvis struct $Domain {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl $Name {
            /// The domain value; `None` if a key was invalid (and reported).
            pub fn build(&self) -> Option<$Domain> {
                Some($Domain { $( $field: self.$field.get()?, )* })
            }
        }

        $(impl $Default for $Domain {
            fn default() -> Self {
                $crate::check::defaults("", |raw: &$Name, _| raw.build())
            }
        })?
    };
    (@name $field:ident $toml:literal) => { $toml };
    (@name $field:ident) => { stringify!($field) };
    (@since $since:literal) => { $since };
    (@since) => { "0.1" };
}

/// Declares an enum whose values the stack file spells as strings, each variant once with
/// its spelling: `X::CHOICES` for [`choice`] and `X::as_str`.
///
/// ```text
/// pub enum RestartAction { Restart = "restart", Stop = "stop", }
/// ```
///
/// An enum whose variants hold data names a second enum, of its variants without their
/// data, that is spelled: `pub enum Balance names BalanceName { Weighted(Vec<u32>) = "weighted", .. }`.
#[macro_export]
#[doc(hidden)]
macro_rules! spelled {
    (
        $(#[$attr:meta])*
        $vis:vis enum $Name:ident names $Tag:ident {
            $( $(#[$vattr:meta])* $Variant:ident $(($($tuple:tt)*))? $({$($fields:tt)*})? = $text:literal, )*
        }
    ) => {
        $(#[$attr])*
        $vis enum $Name { $( $(#[$vattr])* $Variant $(($($tuple)*))? $({$($fields)*})?, )* }

        $crate::spelled! {
            #[doc = concat!("[`", stringify!($Name), "`] without its data, as the stack file spells it.")]
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub(crate) enum $Tag { $( $(#[$vattr])* $Variant = $text, )* }
        }
    };
    (
        $(#[$attr:meta])*
        $vis:vis enum $Name:ident { $( $(#[$vattr:meta])* $Variant:ident = $text:literal, )* }
    ) => {
        $(#[$attr])*
        $vis enum $Name { $( $(#[$vattr])* $Variant, )* }

        #[allow(dead_code, reason = "some are only read, some only named")]
        impl $Name {
            /// Every value, as the stack file spells it, in the order the reference lists them.
            pub const CHOICES: &'static [(&'static str, $Name)] = &[$( ($text, $Name::$Variant) ),*];

            /// As the stack file spells it.
            pub fn as_str(self) -> &'static str {
                match self { $( $Name::$Variant => $text, )* }
            }
        }
    };
}
