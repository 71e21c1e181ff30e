//! Server-side search: the full-text index of event text and the queries over it.
//!
//! This is the one module with backend-specific SQL for search. SQLite keeps an FTS5 table
//! (`porter unicode61` tokenizer, ranked with `bm25`); PostgreSQL keeps a `tsvector` column
//! with a GIN index (the `english` configuration, ranked with `ts_rank`). Both are keyed by
//! the event's stream position. The write path ([`crate::persist`]) adds one row per indexed
//! event in the event's own transaction and deletes the row of an event when it is redacted.
//!
//! A search term is parsed once ([`SearchQuery::parse`]) into words, quoted phrases, `or`
//! alternatives and `-` exclusions, and rendered into each backend's query syntax from words
//! of letters and digits only, so user text never reaches either query language unquoted.
//! Indexed text is reduced to the same words first ([`index_text`]), so that both backends
//! split text where the query parser does.

use ranvier_core::{Result, error::Context};
use sqlx::{Row, any::AnyRow};

use crate::{
    Backend, Store,
    events::{StoredEvent, event_from_row, prefixed_columns},
};

#[cfg(test)]
mod tests;

/// The most words (in words and phrases together) a query keeps; the rest are ignored.
const MAX_QUERY_WORDS: usize = 32;

/// One searchable unit: a word, or words that must appear together in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Atom {
    Word(String),
    Phrase(Vec<String>),
}

impl Atom {
    /// The atom for a run of text: `None` if it holds no word, a phrase if it holds several
    /// (`ranvier.org` must match the two words in order).
    fn of(text: &str) -> Option<Self> {
        let mut words = words(text);
        match words.len() {
            0 => None,
            1 => words.pop().map(Atom::Word),
            _ => Some(Atom::Phrase(words)),
        }
    }

    fn words(&self) -> &[String] {
        match self {
            Atom::Word(word) => std::slice::from_ref(word),
            Atom::Phrase(words) => words,
        }
    }

    fn fts5(&self) -> String {
        // Every word is letters and digits only, so it needs no escaping inside quotes.
        format!("\"{}\"", self.words().join(" "))
    }

    fn tsquery(&self) -> String {
        let quoted: Vec<String> = self.words().iter().map(|word| format!("'{word}'")).collect();
        if quoted.len() == 1 { quoted.concat() } else { format!("({})", quoted.join(" <-> ")) }
    }
}

/// A parsed search term: every group must match (a group matches when any of its atoms does),
/// and no excluded atom may.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchQuery {
    pub groups: Vec<Vec<Atom>>,
    pub excluded: Vec<Atom>,
}

/// The lowercase words of `text`: runs of letters and digits.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()).map(str::to_lowercase).collect()
}

/// Text as it goes into the index: its words separated by spaces, so that both backends see
/// the words the query parser sees (PostgreSQL's parser would otherwise keep `ranvier.org` or
/// `v1.2` whole).
pub fn index_text(text: &str) -> String {
    text.chars().map(|c| if c.is_alphanumeric() { c } else { ' ' }).collect()
}

impl SearchQuery {
    /// Parse a search term as web search engines read one: words must all appear (in any
    /// order, after stemming), `"quoted words"` must appear together in order, `or` between
    /// two terms accepts either, and a leading `-` excludes a term. Any other punctuation
    /// separates words.
    pub fn parse(term: &str) -> Self {
        let mut query = SearchQuery::default();
        let mut join_next = false;
        let mut negate_next = false;
        let mut budget = MAX_QUERY_WORDS;
        for (index, part) in term.split('"').enumerate() {
            if index % 2 == 1 {
                if let Some(atom) = Atom::of(part) {
                    query.add(atom, negate_next, join_next, &mut budget);
                }
                (join_next, negate_next) = (false, false);
                continue;
            }
            for chunk in part.split_whitespace() {
                if chunk.eq_ignore_ascii_case("or") {
                    join_next = !query.groups.is_empty();
                    continue;
                }
                let negated = chunk.starts_with('-');
                match Atom::of(chunk) {
                    Some(atom) => {
                        query.add(atom, negated, join_next, &mut budget);
                        (join_next, negate_next) = (false, false);
                    }
                    // A lone `-` right before a quoted phrase excludes the phrase.
                    None => negate_next = negated,
                }
            }
        }
        query
    }

    fn add(&mut self, atom: Atom, negated: bool, join: bool, budget: &mut usize) {
        let size = atom.words().len();
        if size > *budget {
            return;
        }
        *budget -= size;
        if negated {
            self.excluded.push(atom);
        } else {
            match self.groups.last_mut() {
                Some(group) if join => group.push(atom),
                _ => self.groups.push(vec![atom]),
            }
        }
    }

    /// Whether the query can match nothing: it has no term that must appear.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The words a match may contain (those of the groups, not the exclusions).
    pub fn positive_words(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().flatten().flat_map(Atom::words).map(String::as_str)
    }

    /// The FTS5 `MATCH` expression.
    fn fts5(&self) -> String {
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|group| format!("({})", group.iter().map(Atom::fts5).collect::<Vec<_>>().join(" OR ")))
            .collect();
        let positive = groups.join(" AND ");
        if self.excluded.is_empty() {
            return positive;
        }
        let excluded: Vec<String> = self.excluded.iter().map(Atom::fts5).collect();
        format!("({positive}) NOT ({})", excluded.join(" OR "))
    }

    /// The `to_tsquery` text.
    fn tsquery(&self) -> String {
        let mut parts: Vec<String> = self
            .groups
            .iter()
            .map(|group| format!("({})", group.iter().map(Atom::tsquery).collect::<Vec<_>>().join(" | ")))
            .collect();
        if !self.excluded.is_empty() {
            let excluded: Vec<String> = self.excluded.iter().map(Atom::tsquery).collect();
            parts.push(format!("!({})", excluded.join(" | ")));
        }
        parts.join(" & ")
    }
}

/// The rows that index events: `$1` an event's stream position, `$2` its text (as
/// [`index_text`] made it). SQLite's index is an FTS5 table keyed by rowid; PostgreSQL's a
/// `tsvector` column.
pub(crate) fn index_rows(backend: Backend) -> crate::persist::RowsSql {
    let json = "INSERT INTO event_search (stream_ordering, vector) \
                SELECT stream_ordering, to_tsvector('english', value) \
                FROM json_to_recordset($1::json) AS r(stream_ordering bigint, value text)";
    match backend {
        Backend::Sqlite => crate::persist::RowsSql {
            head: "INSERT INTO event_search (rowid, value) VALUES",
            row: "($1, $2)",
            tail: "",
            json,
        },
        Backend::Postgres => crate::persist::RowsSql {
            head: "INSERT INTO event_search (stream_ordering, vector) VALUES",
            row: "($1, to_tsvector('english', $2))",
            tail: "",
            json,
        },
    }
}

/// The statement that takes an event (`$1`, its id) out of the index.
pub(crate) fn unindex_statement(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "DELETE FROM event_search WHERE rowid = (SELECT stream_ordering FROM events WHERE event_id = $1)"
        }
        Backend::Postgres => {
            "DELETE FROM event_search WHERE stream_ordering = (SELECT stream_ordering FROM events WHERE event_id = $1)"
        }
    }
}

/// A room to search in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchRoom {
    pub room_id: String,
    /// The last position to search (where the user left); `None` for the whole room.
    pub up_to: Option<i64>,
}

/// Where to search: rooms, event types and the newest position. Callers keep the rooms below
/// a few thousand (each is a bound value).
#[derive(Clone, Copy, Debug)]
pub struct SearchScope<'a> {
    pub rooms: &'a [SearchRoom],
    /// The event types whose text may match (the spec's `keys`).
    pub event_types: &'a [&'a str],
    /// Only events at or before this position.
    pub up_to: i64,
}

/// The order of results and where a page starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchOrder {
    /// Best match first, skipping the first `offset` matches.
    Rank { offset: i64 },
    /// Newest first, from the events before position `before`.
    Recent { before: i64 },
}

/// One match.
#[derive(Clone, Debug)]
pub struct SearchHit {
    pub event: StoredEvent,
    /// Higher is better; comparable only within one backend.
    pub rank: f64,
}

/// A value bound to a search statement.
enum Value {
    Text(String),
    Int(i64),
}

/// A search statement under construction: SQL with `$n` placeholders and their values.
struct Statement {
    sql: String,
    values: Vec<Value>,
}

impl Statement {
    fn bind(&mut self, value: Value) -> String {
        self.values.push(value);
        format!("${}", self.values.len())
    }

    async fn fetch(self, store: &Store, action: &'static str) -> Result<Vec<AnyRow>> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(self.sql));
        for value in self.values {
            query = match value {
                Value::Text(text) => query.bind(text),
                Value::Int(int) => query.bind(int),
            };
        }
        query.fetch_all(store.pool()).await.context(action)
    }
}

/// `FROM … WHERE …` of a search: the index, the events it points at, the match, and the scope.
/// `$1` is the query text.
fn from_where(backend: Backend, query: &SearchQuery, scope: &SearchScope<'_>) -> Statement {
    let mut statement = Statement { sql: String::new(), values: Vec::new() };
    match backend {
        // CROSS JOIN makes SQLite read the index first and look up each match's event, rather
        // than scan every event of the user's rooms and ask the index about each.
        Backend::Sqlite => {
            let text = statement.bind(Value::Text(query.fts5()));
            statement.sql = format!(
                " FROM event_search CROSS JOIN events e ON e.stream_ordering = event_search.rowid \
                 WHERE event_search MATCH {text}"
            );
        }
        Backend::Postgres => {
            let text = statement.bind(Value::Text(query.tsquery()));
            statement.sql = format!(
                " FROM event_search s JOIN events e ON e.stream_ordering = s.stream_ordering \
                 WHERE s.vector @@ to_tsquery('english', {text})"
            );
        }
    }
    let up_to = statement.bind(Value::Int(scope.up_to));
    statement.sql.push_str(&format!(" AND e.stream_ordering <= {up_to} AND e.redacted_by IS NULL"));
    let types: Vec<String> =
        scope.event_types.iter().map(|event_type| statement.bind(Value::Text((*event_type).to_owned()))).collect();
    statement.sql.push_str(&format!(" AND e.event_type IN ({})", types.join(", ")));

    let mut rooms = Vec::new();
    let whole: Vec<String> = scope
        .rooms
        .iter()
        .filter(|room| room.up_to.is_none())
        .map(|room| statement.bind(Value::Text(room.room_id.clone())))
        .collect();
    if !whole.is_empty() {
        rooms.push(format!("e.room_id IN ({})", whole.join(", ")));
    }
    for room in scope.rooms {
        if let Some(up_to) = room.up_to {
            let room_id = statement.bind(Value::Text(room.room_id.clone()));
            let up_to = statement.bind(Value::Int(up_to));
            rooms.push(format!("(e.room_id = {room_id} AND e.stream_ordering <= {up_to})"));
        }
    }
    statement.sql.push_str(&format!(" AND ({})", rooms.join(" OR ")));
    statement
}

/// Whether a search could match anything at all.
fn searchable(query: &SearchQuery, scope: &SearchScope<'_>) -> bool {
    !query.is_empty() && !scope.rooms.is_empty() && !scope.event_types.is_empty()
}

impl Store {
    /// One page of the events in `scope` that match `query`, in `order`.
    pub async fn search_events(
        &self,
        query: &SearchQuery,
        scope: &SearchScope<'_>,
        order: SearchOrder,
        limit: i64,
    ) -> Result<Vec<SearchHit>> {
        if !searchable(query, scope) || limit <= 0 {
            return Ok(Vec::new());
        }
        let backend = self.backend();
        let mut statement = from_where(backend, query, scope);
        let rank = match backend {
            // bm25 is lower for better matches.
            Backend::Sqlite => "-bm25(event_search)".to_owned(),
            Backend::Postgres => "CAST(ts_rank(s.vector, to_tsquery('english', $1)) AS DOUBLE PRECISION)".to_owned(),
        };
        let tail = match order {
            SearchOrder::Rank { offset } => {
                let limit = statement.bind(Value::Int(limit));
                let offset = statement.bind(Value::Int(offset.max(0)));
                format!(" ORDER BY hit_rank DESC, e.stream_ordering DESC LIMIT {limit} OFFSET {offset}")
            }
            SearchOrder::Recent { before } => {
                let before = statement.bind(Value::Int(before));
                let limit = statement.bind(Value::Int(limit));
                format!(" AND e.stream_ordering < {before} ORDER BY e.stream_ordering DESC LIMIT {limit}")
            }
        };
        statement.sql = format!("SELECT {}, {rank} AS hit_rank{}{tail}", prefixed_columns("e"), statement.sql);
        let rows = statement.fetch(self, "search events").await?;
        rows.iter()
            .map(|row| {
                let rank: f64 = row
                    .try_get("hit_rank")
                    .map_err(|e| ranvier_core::Error::internal(format!("decode search rank: {e}")))?;
                Ok(SearchHit { event: event_from_row(row)?, rank })
            })
            .collect()
    }

    /// How many events in `scope` match `query`.
    pub async fn search_count(&self, query: &SearchQuery, scope: &SearchScope<'_>) -> Result<i64> {
        if !searchable(query, scope) {
            return Ok(0);
        }
        let mut statement = from_where(self.backend(), query, scope);
        statement.sql = format!("SELECT COUNT(*) AS n{}", statement.sql);
        let rows = statement.fetch(self, "count search matches").await?;
        match rows.first() {
            Some(row) => row.try_get("n").map_err(|e| ranvier_core::Error::internal(format!("decode count: {e}"))),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    fn word(w: &str) -> Atom {
        Atom::Word(w.to_owned())
    }

    fn phrase(ws: &[&str]) -> Atom {
        Atom::Phrase(ws.iter().map(|w| (*w).to_owned()).collect())
    }

    #[test]
    fn terms_phrases_alternatives_and_exclusions() {
        let query = SearchQuery::parse(r#"Martians and "little green MEN" or aliens -mars -"red planet""#);
        assert_eq!(
            query.groups,
            vec![vec![word("martians")], vec![word("and")], vec![phrase(&["little", "green", "men"]), word("aliens")]]
        );
        assert_eq!(query.excluded, vec![word("mars"), phrase(&["red", "planet"])]);
        assert_eq!(
            query.fts5(),
            r#"(("martians") AND ("and") AND ("little green men" OR "aliens")) NOT ("mars" OR "red planet")"#
        );
        assert_eq!(
            query.tsquery(),
            "('martians') & ('and') & (('little' <-> 'green' <-> 'men') | 'aliens') & !('mars' | ('red' <-> 'planet'))"
        );
        assert_eq!(query.positive_words().collect::<Vec<_>>(), ["martians", "and", "little", "green", "men", "aliens"]);
    }

    #[test]
    fn punctuation_never_reaches_the_query_languages() {
        let query = SearchQuery::parse(r#"ranvier.org O'Brien NEAR(a b) *:^ 'x' \ "#);
        assert_eq!(
            query.groups,
            vec![
                vec![phrase(&["ranvier", "org"])],
                vec![phrase(&["o", "brien"])],
                vec![phrase(&["near", "a"])],
                vec![word("b")],
                vec![word("x")]
            ]
        );
        for rendered in [query.fts5(), query.tsquery()] {
            assert!(!rendered.contains('*') && !rendered.contains('\\') && !rendered.contains(':'), "{rendered}");
        }
    }

    #[test]
    fn queries_without_a_required_term_are_empty() {
        for term in ["", "   ", "-spam", r#"- "only this""#, "or", "...", "or -x"] {
            assert!(SearchQuery::parse(term).is_empty(), "{term:?}");
        }
        assert!(!SearchQuery::parse("or cats").is_empty());
        assert_eq!(SearchQuery::parse("or cats").groups, vec![vec![word("cats")]], "a leading `or` joins nothing");
    }

    #[test]
    fn long_queries_are_cut() {
        let term = (0..100).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        assert_eq!(SearchQuery::parse(&term).groups.len(), MAX_QUERY_WORDS);
    }

    #[test]
    fn index_text_keeps_words_only() {
        assert_eq!(index_text("v1.2 of ranvier.org, naïve!"), "v1 2 of ranvier org  naïve ");
        assert_eq!(words("Ünïcode_words 42x"), ["ünïcode", "words", "42x"]);
    }
}
