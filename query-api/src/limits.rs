//! What one caller may ask of the query API: the shape of a query (aliases, root fields) and
//! how often (a token bucket per caller). Depth and complexity are the schema's own limits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, FragmentDefinition, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned};

/// Most aliased fields in one query document (GraphQL Armor's default is 15).
pub const MAX_ALIASES: usize = 15;
/// Most top-level fields in one operation.
pub const MAX_ROOT_FIELDS: usize = 10;
/// Most field selections in one document once every fragment spread is expanded. Checked in
/// time linear in the query's text (each fragment is sized once), before any validation that
/// expands fragments: ten spreads of a fragment that spreads another ten times, eight deep,
/// is a 700-byte query of 10^8 selections.
pub const MAX_EXPANDED_SELECTIONS: usize = 2_000;

/// Why a query was refused before it ran. The request keeps its parsed document, so the
/// executor does not parse it again.
pub fn check_shape(request: &mut async_graphql::Request) -> Result<(), String> {
    // A query that does not parse is reported by the executor with its position.
    let Ok(document) = request.parsed_query() else {
        return Ok(());
    };
    let expanded = expanded_selections(document);
    if expanded > MAX_EXPANDED_SELECTIONS {
        return Err(format!(
            "the query selects more than {MAX_EXPANDED_SELECTIONS} fields once its fragments are \
             expanded; at most {MAX_EXPANDED_SELECTIONS} are allowed"
        ));
    }
    let aliases = count_aliases(document);
    if aliases > MAX_ALIASES {
        return Err(format!(
            "the query uses {aliases} aliases; at most {MAX_ALIASES} are allowed"
        ));
    }
    let operations: Vec<&SelectionSet> = match &document.operations {
        DocumentOperations::Single(op) => vec![&op.node.selection_set.node],
        DocumentOperations::Multiple(ops) => {
            ops.values().map(|op| &op.node.selection_set.node).collect()
        }
    };
    let mut sizes = Sizes::new(&document.fragments);
    for selection_set in operations {
        let roots = sizes.set(selection_set, false);
        if roots > MAX_ROOT_FIELDS {
            return Err(format!(
                "the operation selects {roots} top-level fields; at most {MAX_ROOT_FIELDS} are allowed"
            ));
        }
    }
    Ok(())
}

fn count_aliases(document: &ExecutableDocument) -> usize {
    fn walk(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(field) => {
                    usize::from(field.node.alias.is_some()) + walk(&field.node.selection_set.node)
                }
                Selection::InlineFragment(fragment) => walk(&fragment.node.selection_set.node),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    let operations: usize = match &document.operations {
        DocumentOperations::Single(op) => walk(&op.node.selection_set.node),
        DocumentOperations::Multiple(ops) => ops
            .values()
            .map(|op| walk(&op.node.selection_set.node))
            .sum(),
    };
    operations
        + document
            .fragments
            .values()
            .map(|f| walk(&f.node.selection_set.node))
            .sum::<usize>()
}

/// The number of field selections in `document` with every fragment spread expanded
/// (saturating), each fragment sized once.
fn expanded_selections(document: &ExecutableDocument) -> usize {
    let mut sizes = Sizes::new(&document.fragments);
    let operations: Vec<&SelectionSet> = match &document.operations {
        DocumentOperations::Single(op) => vec![&op.node.selection_set.node],
        DocumentOperations::Multiple(ops) => {
            ops.values().map(|op| &op.node.selection_set.node).collect()
        }
    };
    operations.into_iter().fold(0usize, |total, set| {
        total.saturating_add(sizes.set(set, true))
    })
}

/// Sizes of selection sets through fragments, memoized per fragment (and per depth mode), so
/// a fragment spread a thousand times is sized once. A fragment cycle counts as empty (the
/// validation refuses it afterwards).
struct Sizes<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    /// (fragment, deep) → size
    known: HashMap<(&'a str, bool), usize>,
    in_progress: Vec<&'a str>,
}

impl<'a> Sizes<'a> {
    fn new(fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>) -> Self {
        Sizes {
            fragments,
            known: HashMap::new(),
            in_progress: Vec::new(),
        }
    }

    /// Fields selected in `set`: at this level only, or (`deep`) at every level below too.
    fn set(&mut self, set: &'a SelectionSet, deep: bool) -> usize {
        set.items.iter().fold(0usize, |total, item| {
            let size = match &item.node {
                Selection::Field(field) if deep => {
                    1usize.saturating_add(self.set(&field.node.selection_set.node, true))
                }
                Selection::Field(_) => 1,
                Selection::InlineFragment(fragment) => {
                    self.set(&fragment.node.selection_set.node, deep)
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(spread.node.fragment_name.node.as_str(), deep)
                }
            };
            total.saturating_add(size)
        })
    }

    fn fragment(&mut self, name: &'a str, deep: bool) -> usize {
        if let Some(size) = self.known.get(&(name, deep)) {
            return *size;
        }
        let Some(fragment) = self.fragments.get(name) else {
            return 0;
        };
        if self.in_progress.contains(&name) {
            return 0;
        }
        self.in_progress.push(name);
        let size = self.set(&fragment.node.selection_set.node, deep);
        self.in_progress.pop();
        self.known.insert((name, deep), size);
        size
    }
}

/// A token bucket per caller: `burst` requests at once, refilled at `per_second`.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Most callers tracked at once; beyond it, full buckets are forgotten first.
const MAX_TRACKED: usize = 100_000;

impl RateLimiter {
    pub fn new(per_second: f64, burst: f64) -> Self {
        RateLimiter {
            per_second: per_second.max(0.001),
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `caller`; `Err(seconds)` says when one will be available.
    pub fn check(&self, caller: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(caller) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets
            .entry(caller.to_string())
            .or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(query: &str) -> Result<(), String> {
        check_shape(&mut async_graphql::Request::new(query))
    }

    #[test]
    fn aliases_over_the_cap_are_refused() {
        let ok: String = (0..MAX_ALIASES).map(|i| format!("a{i}: id ")).collect();
        let nested = format!("{{ patients {{ edges {{ node {{ {ok} }} }} }} }}");
        assert_eq!(shape(&nested), Ok(()));
        let many: String = (0..200)
            .map(|i| format!("p{i}: patients(first: 100) {{ edges {{ node {{ id }} }} }} "))
            .collect();
        let error = shape(&format!("{{ {many} }}")).unwrap_err();
        assert!(error.contains("200 aliases"), "{error}");
        // Aliases hidden in a fragment count too.
        let fragment = format!("query {{ ...F }} fragment F on Query {{ {many} }}");
        assert!(shape(&fragment).is_err());
    }

    #[test]
    fn root_fields_over_the_cap_are_refused_through_fragments() {
        let ten = "__typename ".repeat(MAX_ROOT_FIELDS);
        assert_eq!(shape(&format!("{{ {ten} }}")), Ok(()));
        let spread =
            format!("{{ ...F ... on Query {{ __typename }} }} fragment F on Query {{ {ten} }}");
        assert!(shape(&spread).unwrap_err().contains("11 top-level"));
        // A fragment cycle does not hang the check (validation refuses it afterwards).
        assert_eq!(
            shape("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }"),
            Ok(())
        );
        assert_eq!(shape("{ not valid"), Ok(()), "left to the parser's error");
    }

    #[test]
    fn a_fragment_bomb_is_refused_in_linear_time() {
        // Eight levels of fragments, each spreading the next ten times: 10^8 selections.
        let mut fragments: Vec<String> = (1..8)
            .map(|i| {
                let spreads: Vec<String> = (0..10).map(|_| format!("...F{}", i + 1)).collect();
                format!("fragment F{i} on Patient {{ {} }}", spreads.join(" "))
            })
            .collect();
        fragments.push("fragment F8 on Patient { id }".into());
        let query = format!(
            "{{ patient(id: \"x\") {{ ...F1 }} }} {}",
            fragments.join(" ")
        );
        let error = shape(&query).unwrap_err();
        assert!(error.contains("once its fragments are expanded"), "{error}");
        // The same shape two levels deep (100 selections) is fine.
        let small = "{ patient(id: \"x\") { ...A } } fragment A on Patient { ...B ...B } fragment B on Patient { id name { text } }";
        assert_eq!(shape(small), Ok(()));
    }

    #[test]
    fn a_caller_over_the_rate_is_told_when_to_retry_and_others_are_not_affected() {
        let limiter = RateLimiter::new(1.0, 3.0);
        for _ in 0..3 {
            assert_eq!(limiter.check("a"), Ok(()));
        }
        assert_eq!(limiter.check("a"), Err(1));
        assert_eq!(limiter.check("b"), Ok(()));
    }
}
