//! What a key's value may be: one [`Kind`] per sort of value, each with one wording per
//! kind of error, so that every key of the file is checked and explained alike.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;
use toml::de::DeValue;

use super::{NumberRange, Omitted, Section, Shape, Table};
use crate::problem::{Problems, quoted_choices, suggest};

/// Where a value is, for messages: `what` names it (`` `connect` ``, ``elements of `on` ``),
/// `path` is the dotted path of the key (`services.web.expose.timeouts.connect`).
pub(crate) struct At<'a> {
    pub key: &'a str,
    pub what: &'a str,
    pub path: &'a str,
}

/// A sort of value: how it is read, checked and described.
pub(crate) trait Kind {
    /// What it reads into.
    type Out;
    /// Reads and checks `v`; on a problem, reports it at `v` and returns `None`.
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<Self::Out>;
    /// Its description, for the reference, the JSON Schema and messages.
    fn shape(&self) -> Shape;
}

impl Shape {
    /// What a wrong value should have been: "a string", "an integer"...
    pub(crate) fn expected(&self) -> String {
        match self {
            Shape::String(_) => "a string".into(),
            Shape::Bool => "a boolean".into(),
            Shape::Int { .. } => "an integer".into(),
            Shape::Number(_) => "a number".into(),
            Shape::Duration(_) => DURATION.into(),
            Shape::Choice(names) => quoted_choices(names),
            Shape::Text(form) => (*form).into(),
            Shape::List(item) => format!("an array of {}", item.plural()),
            Shape::Table(_) => "a table".into(),
            Shape::Tables(_) => "an array of tables".into(),
            Shape::Map { value, .. } => format!("a table of {}", value.plural()),
            Shape::CountOrPercent { .. } => {
                "a count such as 2 or a percentage such as \"50%\"".into()
            }
        }
    }

    /// How an array of these is named: "an array of {plural}".
    fn plural(&self) -> &'static str {
        match self {
            Shape::String(_) | Shape::Choice(_) | Shape::Text(_) => "strings",
            Shape::Int { .. } => "integers",
            Shape::Number(_) => "numbers",
            Shape::Duration(_) => "durations",
            Shape::Table(_) => "tables",
            _ => "values",
        }
    }
}

impl At<'_> {
    /// The one wording of a wrong TOML type, reported.
    fn wrong<T>(&self, kind: &impl Kind, v: &Spanned<DeValue<'_>>, p: &mut Problems) -> Option<T> {
        p.fail(v.span(), self.wrong_type(&kind.shape().expected(), v))
    }

    /// The one wording of a wrong TOML type: "`key` must be EXPECTED, found a TYPE" (the
    /// TOML type with its article: "a string", "an integer").
    fn wrong_type(&self, expected: &str, v: &Spanned<DeValue<'_>>) -> String {
        let found = v.get_ref().type_str();
        let an = found.starts_with(['a', 'e', 'i', 'o', 'u']);
        let article = if an { "an" } else { "a" };
        format!("{} must be {expected}, found {article} {found}", self.what)
    }
}

/// The value of a key left out, `None` for a required or optional one: its default read
/// as the file would have it, an empty table for [`Omitted::Table`]. A problem in `p`
/// means the declaration is wrong, which a unit test rules out.
pub(crate) fn read_default<K: Kind>(
    kind: &K,
    omitted: Omitted,
    table: &str,
    at: &At<'_>,
    p: &mut Problems,
) -> Option<K::Out> {
    if omitted == Omitted::Table {
        let empty = DeValue::Table(toml::de::DeTable::new());
        return kind.read(&Spanned::new(0..0, empty), at, p);
    }
    let source = format!("v = {}", omitted.text_for(table)?);
    let doc = toml::de::DeTable::parse(&source).ok()?;
    let v = doc.get_ref().get("v")?;
    kind.read(v, at, p)
}

/// The strings a key takes (and, as a [`Kind`], how they are read).
#[derive(Debug, Clone, Copy, Default)]
pub struct StringRule {
    /// `""` is refused.
    pub non_empty: bool,
    /// A number or boolean given instead gets "quote it: KEY = "8080"" (for `env`, where
    /// values are strings because the environment is).
    pub quote_hint: bool,
}

/// Any string.
pub(crate) fn string() -> StringRule {
    StringRule::default()
}

impl StringRule {
    /// `""` is refused.
    pub const fn non_empty(mut self) -> StringRule {
        self.non_empty = true;
        self
    }

    /// With the hint to quote a number or boolean given instead.
    pub const fn quote_hint(mut self) -> StringRule {
        self.quote_hint = true;
        self
    }
}

impl Kind for StringRule {
    type Out = String;
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<String> {
        let Some(s) = v.get_ref().as_str() else {
            let shown = match (self.quote_hint, v.get_ref()) {
                (true, DeValue::Integer(i)) => i.to_string(),
                (true, DeValue::Float(f)) => f.to_string(),
                (true, DeValue::Boolean(b)) => b.to_string(),
                (true, DeValue::Datetime(d)) => d.to_string(),
                _ => return at.wrong(self, v, p),
            };
            let message = at.wrong_type("a string", v);
            let hint = format!("quote it: {} = \"{shown}\"", at.key);
            return p.fail(v.span(), format!("{message}; {hint}"));
        };
        // No string of the file may hold a NUL: arguments, paths, names and header values
        // cannot carry one.
        let problem = if self.non_empty && s.is_empty() {
            "must not be empty"
        } else if s.contains('\0') {
            "must not contain a NUL character"
        } else {
            return Some(s.to_owned());
        };
        p.fail(v.span(), format!("{} {problem}", at.what))
    }
    fn shape(&self) -> Shape {
        Shape::String(*self)
    }
}

/// `true` or `false`.
pub(crate) struct Bool {
    /// Why `false` is refused (a key whose presence is a choice), or empty.
    only_true: &'static str,
}

/// A boolean.
pub(crate) const fn boolean() -> Bool {
    Bool { only_true: "" }
}

impl Bool {
    /// `false` is refused: "`KEY = false` {why}".
    pub const fn only_true(why: &'static str) -> Bool {
        Bool { only_true: why }
    }
}

impl Kind for Bool {
    type Out = bool;
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<bool> {
        let b = v.get_ref().as_bool().or_else(|| at.wrong(self, v, p))?;
        if !b && !self.only_true.is_empty() {
            return p.fail(v.span(), format!("`{} = false` {}", at.key, self.only_true));
        }
        Some(b)
    }
    fn shape(&self) -> Shape {
        Shape::Bool
    }
}

/// An integer in a range, read into `T`.
pub(crate) struct Int<T> {
    min: i64,
    max: i64,
    unit: &'static str,
    to: PhantomData<fn() -> T>,
}

/// An integer in `min..=max`.
pub(crate) const fn int<T>(min: i64, max: i64) -> Int<T> {
    Int {
        min,
        max,
        unit: "",
        to: PhantomData,
    }
}

impl<T> Int<T> {
    /// What it counts (`"bytes"`), for the reference.
    pub const fn unit(self, unit: &'static str) -> Int<T> {
        Int { unit, ..self }
    }
}

/// `None` if not an integer; `Err(text)` if it does not fit an `i64`.
fn integer(value: &DeValue<'_>) -> Option<Result<i64, String>> {
    let i = value.as_integer()?;
    Some(i64::from_str_radix(i.as_str(), i.radix()).map_err(|_| i.to_string()))
}

/// "between 1 and 10", or "at least 1" for a value below a range whose top is the type's
/// own limit (the top means nothing to the user there).
fn range_words(min: i64, max: i64, low: bool) -> String {
    if low && max >= i64::from(u32::MAX) {
        format!("at least {min}")
    } else {
        format!("between {min} and {max}")
    }
}

impl<T: TryFrom<i64>> Kind for Int<T> {
    type Out = T;
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<T> {
        let (shown, low) = match integer(v.get_ref()) {
            None => return at.wrong(self, v, p),
            Some(Ok(n)) => match T::try_from(n) {
                Ok(t) if (self.min..=self.max).contains(&n) => return Some(t),
                _ => (n.to_string(), n < self.min),
            },
            Some(Err(text)) => (text, false),
        };
        let (what, range) = (at.what, range_words(self.min, self.max, low));
        p.fail(v.span(), format!("{what} must be {range}, found {shown}"))
    }
    fn shape(&self) -> Shape {
        Shape::Int {
            min: self.min,
            max: self.max,
            unit: self.unit,
        }
    }
}

/// A number in `min..=max`.
pub(crate) const fn number(min: f64, max: f64) -> NumberRange {
    NumberRange {
        min,
        max,
        min_open: false,
        max_open: false,
        unit: "",
    }
}

impl NumberRange {
    /// `min` itself is refused.
    pub(crate) const fn above_min(mut self) -> Self {
        self.min_open = true;
        self
    }
    /// `max` itself is refused.
    pub(crate) const fn below_max(mut self) -> Self {
        self.max_open = true;
        self
    }
    /// What it measures (`"percent"`), for the reference.
    pub(crate) const fn unit(self, unit: &'static str) -> Self {
        Self { unit, ..self }
    }

    fn contains(&self, n: f64) -> bool {
        let low = n > self.min || (n == self.min && !self.min_open);
        let high = n < self.max || (n == self.max && !self.max_open);
        n.is_finite() && low && high
    }

    /// "between 0 and 100", "at least 0 and less than 1", "greater than 0 and less than 100".
    fn words(&self) -> String {
        match (self.min_open, self.max_open) {
            (false, false) if self.max >= 1e15 => format!("at least {}", self.min),
            (false, false) => format!("between {} and {}", self.min, self.max),
            (low, high) => format!(
                "{} {} and {} {}",
                if low { "greater than" } else { "at least" },
                self.min,
                if high { "less than" } else { "at most" },
                self.max
            ),
        }
    }
}

impl Kind for NumberRange {
    type Out = f64;
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<f64> {
        let n = match v.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().unwrap_or(f64::NAN),
            // Precision loss above 2^53 is irrelevant: such a value fails the range.
            DeValue::Integer(_) => match integer(v.get_ref()) {
                Some(Ok(i)) => i as f64,
                _ => f64::INFINITY,
            },
            _ => return at.wrong(self, v, p),
        };
        if self.contains(n) {
            return Some(n);
        }
        let (what, range, unit) = (at.what, self.words(), self.unit);
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" ({unit})")
        };
        p.fail(v.span(), format!("{what} must be {range}{unit}, found {n}"))
    }
    fn shape(&self) -> Shape {
        Shape::Number(*self)
    }
}

/// The durations a key takes, at most a day or a year (and, as a [`Kind`], how they are
/// read).
#[derive(Debug, Clone, Copy)]
pub struct DurationRange {
    /// The longest accepted, and how it is written.
    pub max: (Duration, &'static str),
    /// The shortest accepted, and why a shorter one is refused.
    pub min: (Duration, &'static str),
    /// `"0s"` is refused.
    pub positive: bool,
}

/// The longest duration most keys accept. Longer values are typos (`"10000h"` for
/// `"10000ms"`) and, near `u64::MAX` seconds, overflow the clock arithmetic.
const DAY: (Duration, &str) = (Duration::from_secs(24 * 3600), "24h");
/// The longest for keys measured in days or weeks: SLO periods, alert repeats, retention.
const YEAR: (Duration, &str) = (Duration::from_secs(366 * 24 * 3600), "366d");

/// A duration of at most 24h.
pub(crate) const fn duration() -> DurationRange {
    DurationRange {
        max: DAY,
        min: (Duration::ZERO, ""),
        positive: false,
    }
}

impl DurationRange {
    /// Up to 366d.
    pub const fn long(self) -> DurationRange {
        DurationRange { max: YEAR, ..self }
    }
    /// Shorter than `min` is refused, saying `why`.
    pub const fn at_least(mut self, min: Duration, why: &'static str) -> DurationRange {
        self.min = (min, why);
        self
    }
    /// `"0s"` is refused (something waits on it or divides by it).
    pub const fn positive(mut self) -> DurationRange {
        self.positive = true;
        self
    }
}

/// How a duration is described in messages.
const DURATION: &str = "a duration such as \"250ms\" or \"5s\"";

impl Kind for DurationRange {
    type Out = Duration;
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<Duration> {
        let Some(text) = v.get_ref().as_str() else {
            return at.wrong(self, v, p);
        };
        let message = match humantime::parse_duration(text) {
            Ok(d) if d > self.max.0 => format!(
                "{} must be at most {}, found {text:?}; check the unit (ms, s, m, h, d)",
                at.what, self.max.1
            ),
            Ok(d) if d < self.min.0 => {
                let (min, why) = (humantime::format_duration(self.min.0), self.min.1);
                format!("{} must be at least {min}, found {text:?}; {why}", at.what)
            }
            Ok(d) if d.is_zero() && self.positive => format!("{} must be greater than 0", at.what),
            Ok(d) => return Some(d),
            // humantime's own words say where the text goes wrong, and list the units.
            Err(e) => format!("{} must be {DURATION}, found {text:?} ({e})", at.what),
        };
        p.fail(v.span(), message)
    }
    fn shape(&self) -> Shape {
        Shape::Duration(*self)
    }
}

/// One of a fixed set of strings, spelled in kebab-case. The snake_case spelling of a
/// choice (`round_robin`) is still read, with a warning that names the new one.
pub(crate) struct Choice<T: 'static> {
    choices: &'static [(&'static str, T)],
}

/// One of `choices`.
pub(crate) const fn choice<T>(choices: &'static [(&'static str, T)]) -> Choice<T> {
    Choice { choices }
}

impl<T: Clone> Kind for Choice<T> {
    type Out = T;
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<T> {
        read_form(self, v, at, p, |s| {
            let found = self.choices.iter().find(|(n, _)| *n == s);
            found.map(|(_, t)| t.clone()).ok_or_else(|| {
                suggest(s, self.choices.iter().map(|(n, _)| *n))
                    .map(|m| format!("; did you mean \"{m}\"?"))
                    .unwrap_or_default()
            })
        })
    }
    fn shape(&self) -> Shape {
        Shape::Choice(self.choices.iter().map(|(n, _)| *n).collect())
    }
}

/// Reads a string that `parse` turns into a value, or `Err` with an addition to the
/// message (a did-you-mean) after the kind's [`Shape::expected`]. The snake_case spelling
/// of a kebab-case value (`client_address`) still reads, with a warning that names the
/// new one.
fn read_form<T>(
    kind: &impl Kind,
    v: &Spanned<DeValue<'_>>,
    at: &At<'_>,
    p: &mut Problems,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<T> {
    let Some(s) = v.get_ref().as_str() else {
        return at.wrong(kind, v, p);
    };
    let more = match parse(s) {
        Ok(t) => return Some(t),
        Err(more) => more,
    };
    let (what, kebab) = (at.what, s.replace('_', "-"));
    if kebab != s
        && let Ok(t) = parse(&kebab)
    {
        let old = format!("\"{s}\" is the old spelling of \"{kebab}\"; write \"{kebab}\"");
        p.warn(v.span(), format!("{what}: {old}"));
        return Some(t);
    }
    let form = kind.shape().expected();
    p.fail(
        v.span(),
        format!("{what} must be {form}, found {s:?}{more}"),
    )
}

/// A string with a form of its own (a path, a URL, `"header:NAME"`), parsed by `parse`.
/// `Err` carries an addition to the message, such as a did-you-mean.
pub(crate) struct Text<T> {
    parse: fn(&str) -> Result<T, String>,
    form: &'static str,
}

/// A string of the form described by `form` (`"a path starting with `/`"`).
pub(crate) const fn text<T>(form: &'static str, parse: fn(&str) -> Result<T, String>) -> Text<T> {
    Text { parse, form }
}

impl<T> Kind for Text<T> {
    type Out = T;
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<T> {
        read_form(self, v, at, p, self.parse)
    }
    fn shape(&self) -> Shape {
        Shape::Text(self.form)
    }
}

/// `IP:PORT`. Only an IP: a host name would be resolved at bind time, possibly to several
/// addresses, and clashes between services could no longer be checked.
pub(crate) const fn address() -> Text<SocketAddr> {
    text("an IP:PORT address such as \"127.0.0.1:8080\"", |s| {
        s.trim().parse().map_err(|_| String::new())
    })
}

/// An array of values of one kind.
pub(crate) struct List<K> {
    item: K,
    non_empty: &'static str,
}

/// An array of `item`s.
pub(crate) const fn list<K>(item: K) -> List<K> {
    List {
        item,
        non_empty: "",
    }
}

impl<K> List<K> {
    /// An empty array is refused, saying `why` ("list the exit codes this rule applies to").
    pub fn non_empty(mut self, why: &'static str) -> List<K> {
        self.non_empty = why;
        self
    }
}

impl<K: Kind> Kind for List<K> {
    type Out = Vec<K::Out>;
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<Self::Out> {
        let DeValue::Array(items) = v.get_ref() else {
            let mut message = at.wrong_type(&self.shape().expected(), v);
            // The most common slip: a command line written as one string.
            if let Some(s) = v.get_ref().as_str()
                && !s.trim().is_empty()
            {
                let words: Vec<String> = s.split_whitespace().map(|w| format!("{w:?}")).collect();
                let words = words.join(", ");
                message.push_str(&format!("; write it as {} = [{words}]", at.key));
            }
            return p.fail(v.span(), message);
        };
        if items.is_empty() && !self.non_empty.is_empty() {
            return p.fail(
                v.span(),
                format!("{} must not be empty: {}", at.what, self.non_empty),
            );
        }
        let what = format!("elements of `{}`", at.key);
        let inner = At { what: &what, ..*at };
        // Every element is read (and its problem reported) before one failure fails all.
        let read: Vec<_> = items.iter().map(|i| self.item.read(i, &inner, p)).collect();
        read.into_iter().collect()
    }
    fn shape(&self) -> Shape {
        Shape::List(Box::new(self.item.shape()))
    }
}

/// A value kept with its span, for checks that point at it (an element of a list).
pub(crate) struct WithSpan<K>(K);

/// `item`, with its span.
pub(crate) const fn spanned<K>(item: K) -> WithSpan<K> {
    WithSpan(item)
}

impl<K: Kind> Kind for WithSpan<K> {
    type Out = Spanned<K::Out>;
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<Self::Out> {
        let x = self.0.read(v, at, p)?;
        Some(Spanned::new(v.span(), x))
    }
    fn shape(&self) -> Shape {
        self.0.shape()
    }
}

/// A program and its arguments, never passed through a shell: the program must be named.
pub(crate) struct Command;

/// A command line: `["program", "arg", ...]`.
pub(crate) const fn command() -> Command {
    Command
}

impl Kind for Command {
    type Out = Vec<String>;
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<Vec<String>> {
        // An empty argument is a real value (`--name ""`); only the program must be named.
        // Looked at first, so that it is reported with the other elements' problems.
        let first = v.get_ref().as_array().and_then(|items| items.first());
        let unnamed = first.filter(|program| program.get_ref().as_str() == Some(""));
        if let Some(program) = unnamed {
            let key = at.key;
            let problem =
                format!("the first element of `{key}` is the program to run and must not be empty");
            p.push(program.span(), problem);
        }
        let args = list(string())
            .non_empty("it is the program to run and its arguments")
            .read(v, at, p)?;
        unnamed.is_none().then_some(args)
    }
    fn shape(&self) -> Shape {
        Shape::List(Box::new(Shape::String(string())))
    }
}

/// A sub-table, read by its [`Section`].
pub(crate) struct Sub<S>(PhantomData<fn() -> S>);

/// A table `[parent.key]` declared by `S`.
pub(crate) const fn table<S>() -> Sub<S> {
    Sub(PhantomData)
}

impl<S: Section> Kind for Sub<S> {
    type Out = S;
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<S> {
        read_table(v, at, format!("[{}]", at.path), p)
    }
    fn shape(&self) -> Shape {
        Shape::Table(S::table_doc())
    }
}

/// Reads `v` as a table `S` that messages name `label`; `at.what` names it when it is not
/// a table.
fn read_table<S: Section>(
    v: &Spanned<DeValue<'_>>,
    at: &At<'_>,
    label: String,
    p: &mut Problems,
) -> Option<S> {
    let DeValue::Table(map) = v.get_ref() else {
        return p.fail(v.span(), at.wrong_type(&format!("a table ({label})"), v));
    };
    let mut t = Table::new(Some(map), v.span(), at.path.to_owned(), at.key);
    t.label = label;
    Some(S::read(&t, p))
}

/// An array of tables `[[parent.key]]`, each read by `S`.
pub(crate) struct Subs<S>(PhantomData<fn() -> S>);

/// `[[parent.key]]` entries declared by `S`.
pub(crate) const fn tables<S>() -> Subs<S> {
    Subs(PhantomData)
}

impl<S: Section> Kind for Subs<S> {
    type Out = Vec<S>;
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<Vec<S>> {
        let DeValue::Array(items) = v.get_ref() else {
            // `[services.web.slo]` (one table) is the likely slip: say how to write it.
            let expected = format!("an array of tables ([[{}]])", at.path);
            return p.fail(v.span(), at.wrong_type(&expected, v));
        };
        let what = &format!("each entry of `{}`", at.key);
        let entry = At { what, ..*at };
        let label = format!("[[{}]]", at.path);
        let read = |item| read_table(item, &entry, label.clone(), p);
        Some(items.iter().filter_map(read).collect())
    }
    fn shape(&self) -> Shape {
        Shape::Tables(S::table_doc())
    }
}

/// A table of arbitrary keys (`env`, `services`), each holding a `K`, in file order.
pub(crate) struct Map<K> {
    value: K,
    name: &'static str,
}

/// A table whose keys are names the user chooses, written `name` in the reference.
pub(crate) const fn map<K>(name: &'static str, value: K) -> Map<K> {
    Map { value, name }
}

impl<K: Kind> Kind for Map<K> {
    type Out = Vec<(Spanned<String>, Spanned<K::Out>)>;
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<Self::Out> {
        let DeValue::Table(map) = v.get_ref() else {
            let mut expected = self.shape().expected();
            if matches!(self.value.shape(), Shape::Table(_)) {
                expected.push_str(&format!(" ([{}.{}])", at.path, self.name));
            }
            return p.fail(v.span(), at.wrong_type(&expected, v));
        };
        let mut entries: Vec<_> = map.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        let mut out = Vec::new();
        for (name, value) in entries {
            let key: &str = name.get_ref();
            let path = &format!("{}.{key}", at.path);
            let what = &format!("`{}.{key}`", at.key);
            let inner = At { key, what, path };
            if let Some(x) = self.value.read(value, &inner, p) {
                out.push((
                    Spanned::new(name.span(), key.to_owned()),
                    Spanned::new(value.span(), x),
                ));
            }
        }
        Some(out)
    }
    fn shape(&self) -> Shape {
        Shape::Map {
            key: self.name,
            value: Box::new(self.value.shape()),
        }
    }
}

/// A number of replicas, or a share of them: `2` or `"50%"`.
pub(crate) struct CountOrPercent {
    max: i64,
}

/// A count in `0..=max`, or a percentage in `0..=100`.
pub(crate) const fn count_or_percent(max: i64) -> CountOrPercent {
    CountOrPercent { max }
}

impl Kind for CountOrPercent {
    type Out = crate::model::Amount;
    fn read(&self, v: &Spanned<DeValue<'_>>, at: &At<'_>, p: &mut Problems) -> Option<Self::Out> {
        if v.get_ref().as_integer().is_some() {
            let n: u32 = int(0, self.max).read(v, at, p)?;
            return Some(crate::model::Amount::Count(n));
        }
        read_form(self, v, at, p, |s| {
            s.strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .filter(|n| (0.0..=100.0).contains(n))
                .map(crate::model::Amount::Percent)
                .ok_or_else(String::new)
        })
    }
    fn shape(&self) -> Shape {
        Shape::CountOrPercent { max: self.max }
    }
}
