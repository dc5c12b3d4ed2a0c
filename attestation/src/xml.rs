//! A small, strict XML parser and inclusive Canonical XML 1.1 (without comments), for verifying
//! NVIDIA's signed RIMs (SWID tags with enveloped XML-DSig).
//!
//! Deliberately narrow: no DOCTYPE (so no entity declarations), only the five predefined entities
//! and character references, UTF-8 only. Qualified names are kept exactly as written (canonical
//! output needs the prefixes); attribute values are normalised as XML 1.0 §3.3.3 says for CDATA
//! attributes; line ends are normalised to LF.

use std::collections::BTreeMap;

/// A node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// An element.
    Element(Element),
    /// Character data (CDATA sections included, entities resolved).
    Text(String),
    /// A comment (never canonicalised: "without comments").
    Comment(String),
    /// A processing instruction.
    Pi(String, String),
}

/// An element with its attributes in document order (namespace declarations included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The qualified name as written, e.g. `ds:Signature`.
    pub qname: String,
    /// Attributes as (qualified name, normalised value).
    pub attrs: Vec<(String, String)>,
    /// Children in order.
    pub children: Vec<Node>,
}

/// A parsed document: the root element and the processing instructions around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The document element.
    pub root: Element,
    /// PIs before the root (comments are dropped).
    pub before: Vec<Node>,
    /// PIs after the root.
    pub after: Vec<Node>,
}

/// In-scope namespace bindings: prefix ("" for the default namespace) → URI.
pub type Namespaces = BTreeMap<String, String>;

impl Element {
    /// The prefix and local part of the qualified name.
    pub fn split(&self) -> (&str, &str) {
        split_qname(&self.qname)
    }

    /// The local name.
    pub fn local(&self) -> &str {
        self.split().1
    }

    /// An attribute's value by qualified name.
    pub fn attr(&self, qname: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == qname).map(|(_, v)| v.as_str())
    }

    /// The bindings in scope inside this element, given those of its parent.
    pub fn scope(&self, parent: &Namespaces) -> Namespaces {
        let mut ns = parent.clone();
        for (k, v) in &self.attrs {
            if k == "xmlns" {
                if v.is_empty() {
                    ns.remove("");
                } else {
                    ns.insert(String::new(), v.clone());
                }
            } else if let Some(p) = k.strip_prefix("xmlns:") {
                ns.insert(p.to_owned(), v.clone());
            }
        }
        ns
    }

    /// The namespace URI of this element, in `scope` (its own scope).
    pub fn namespace<'a>(&self, scope: &'a Namespaces) -> Option<&'a str> {
        scope.get(self.split().0).map(String::as_str)
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// The concatenated text content of direct text children.
    pub fn text(&self) -> String {
        self.children.iter().filter_map(|n| if let Node::Text(t) = n { Some(t.as_str()) } else { None }).collect()
    }
}

fn split_qname(q: &str) -> (&str, &str) {
    q.split_once(':').unwrap_or(("", q))
}

struct Parser<'a> {
    s: &'a str,
    at: usize,
}

/// XML 1.0 `Char` (§2.2): what a document may contain, literally or by reference.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.at..]
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        let line = self.s[..self.at].matches('\n').count() + 1;
        Err(format!("XML line {line}: {what}"))
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.rest().starts_with(lit) {
            self.at += lit.len();
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        let n = self.rest().len() - self.rest().trim_start_matches([' ', '\t', '\n']).len();
        self.at += n;
    }

    fn until(&mut self, end: &str, what: &str) -> Result<&'a str, String> {
        match self.rest().find(end) {
            Some(i) => {
                let out = &self.rest()[..i];
                self.at += i + end.len();
                Ok(out)
            }
            None => self.err(&format!("unterminated {what}")),
        }
    }

    fn name(&mut self) -> Result<&'a str, String> {
        let n: usize = self.rest().chars().take_while(|&c| is_name_char(c)).map(char::len_utf8).sum();
        if n == 0 {
            return self.err("expected a name");
        }
        let out = &self.rest()[..n];
        self.at += n;
        Ok(out)
    }

    /// Resolves entity and character references in `raw` (text or an attribute value).
    fn unescape(&self, raw: &str, attribute: bool) -> Result<String, String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(i) = rest.find(['&', '<', '\t', '\n']) {
            let (before, tail) = rest.split_at(i);
            out.push_str(before);
            let c = tail.as_bytes()[0];
            if c == b'<' {
                return self.err("'<' inside an attribute value");
            }
            if c != b'&' {
                // Literal whitespace in an attribute value becomes a space (§3.3.3).
                out.push(if attribute { ' ' } else { c as char });
                rest = &tail[1..];
                continue;
            }
            let Some(semi) = tail.find(';') else { return self.err("unterminated reference") };
            let entity = &tail[1..semi];
            match entity {
                "lt" => out.push('<'),
                "gt" => out.push('>'),
                "amp" => out.push('&'),
                "quot" => out.push('"'),
                "apos" => out.push('\''),
                e if e.starts_with("#x") => out.push(
                    u32::from_str_radix(&e[2..], 16)
                        .ok()
                        .and_then(char::from_u32)
                        .filter(|&c| is_xml_char(c))
                        .ok_or("bad character reference")?,
                ),
                e if e.starts_with('#') => out.push(
                    e[1..]
                        .parse::<u32>()
                        .ok()
                        .and_then(char::from_u32)
                        .filter(|&c| is_xml_char(c))
                        .ok_or("bad character reference")?,
                ),
                e => return self.err(&format!("undefined entity &{e};")),
            }
            rest = &tail[semi + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn element(&mut self, depth: usize) -> Result<Element, String> {
        if depth > 64 {
            return self.err("elements nested too deeply");
        }
        if !self.eat("<") {
            return self.err("expected an element");
        }
        let qname = self.name()?.to_owned();
        let mut attrs: Vec<(String, String)> = Vec::new();
        loop {
            let before = self.at;
            self.skip_ws();
            if self.eat("/>") {
                return Ok(Element { qname, attrs, children: Vec::new() });
            }
            if self.eat(">") {
                break;
            }
            if self.at == before {
                return self.err("expected whitespace between attributes");
            }
            let key = self.name()?.to_owned();
            self.skip_ws();
            if !self.eat("=") {
                return self.err("expected '=' after an attribute name");
            }
            self.skip_ws();
            let quote = if self.eat("\"") {
                "\""
            } else if self.eat("'") {
                "'"
            } else {
                return self.err("expected a quoted attribute value");
            };
            let raw = self.until(quote, "attribute value")?;
            let value = self.unescape(raw, true)?;
            if attrs.iter().any(|(k, _)| *k == key) {
                return self.err(&format!("attribute {key} appears twice"));
            }
            attrs.push((key, value));
        }
        let mut children = Vec::new();
        loop {
            if self.rest().is_empty() {
                return self.err(&format!("element {qname} is not closed"));
            }
            if self.eat("</") {
                let end = self.name()?;
                self.skip_ws();
                if end != qname || !self.eat(">") {
                    return self.err(&format!("</{end}> does not close <{qname}>"));
                }
                return Ok(Element { qname, attrs, children });
            }
            if let Some(node) = self.misc()? {
                children.push(node);
            } else if self.rest().starts_with("<![CDATA[") {
                self.at += 9;
                let text = self.until("]]>", "CDATA section")?;
                children.push(Node::Text(text.to_owned()));
            } else if self.rest().starts_with('<') {
                children.push(Node::Element(self.element(depth + 1)?));
            } else {
                let end = self.rest().find('<').unwrap_or(self.rest().len());
                let raw = &self.rest()[..end];
                if raw.contains("]]>") {
                    return self.err("']]>' in character data");
                }
                let text = self.unescape(raw, false)?;
                self.at += end;
                children.push(Node::Text(text));
            }
        }
    }

    /// A comment or processing instruction, if one starts here.
    fn misc(&mut self) -> Result<Option<Node>, String> {
        if self.eat("<!--") {
            return Ok(Some(Node::Comment(self.until("-->", "comment")?.to_owned())));
        }
        if self.rest().starts_with("<!") && !self.rest().starts_with("<![CDATA[") {
            return self.err("DOCTYPE and other declarations are not accepted");
        }
        if self.eat("<?") {
            let target = self.name()?.to_owned();
            let data = self.until("?>", "processing instruction")?.trim_start().to_owned();
            return Ok(Some(Node::Pi(target, data)));
        }
        Ok(None)
    }
}

/// Parses a document.
pub fn parse(bytes: &[u8]) -> Result<Document, String> {
    let text = std::str::from_utf8(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes))
        .map_err(|_| "XML is not UTF-8".to_owned())?;
    if let Some(c) = text.chars().find(|&c| !is_xml_char(c)) {
        return Err(format!("XML holds the character U+{:04X}, which XML 1.0 does not allow", u32::from(c)));
    }
    // Line-end normalisation (§2.11).
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut p = Parser { s: &text, at: 0 };
    if p.rest().starts_with("<?xml") {
        p.until("?>", "XML declaration")?;
    }
    let mut before = Vec::new();
    loop {
        p.skip_ws();
        match p.misc()? {
            Some(Node::Pi(t, d)) => before.push(Node::Pi(t, d)),
            Some(_) => {}
            None => break,
        }
    }
    let root = p.element(0)?;
    let mut after = Vec::new();
    loop {
        p.skip_ws();
        if p.rest().is_empty() {
            break;
        }
        match p.misc()? {
            Some(Node::Pi(t, d)) => after.push(Node::Pi(t, d)),
            Some(_) => {}
            None => return p.err("content after the document element"),
        }
    }
    Ok(Document { root, before, after })
}

fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// Canonical XML 1.1 of `el` and its descendants, skipping `exclude` (compared by address), with
/// `scope` the bindings in scope at `el`'s parent and `rendered` those already output by its
/// nearest output ancestor (empty for the apex of a subtree).
fn c14n_element(
    el: &Element,
    scope: &Namespaces,
    rendered: &Namespaces,
    exclude: Option<*const Element>,
    out: &mut String,
) {
    if exclude == Some(el as *const Element) {
        return;
    }
    let inner = el.scope(scope);
    // Namespace declarations to output: in scope here but not already rendered identically.
    let mut decls: Vec<(&str, &str)> = Vec::new();
    for (prefix, uri) in &inner {
        if prefix == "xml" {
            continue;
        }
        if rendered.get(prefix) != Some(uri) {
            decls.push((prefix, uri));
        }
    }
    if !inner.contains_key("") && rendered.get("").is_some_and(|u| !u.is_empty()) {
        decls.push(("", ""));
    }
    decls.sort();
    let mut attrs: Vec<(&str, &str, &str, &str)> = el
        .attrs
        .iter()
        .filter(|(k, _)| k != "xmlns" && !k.starts_with("xmlns:"))
        .map(|(k, v)| {
            let (prefix, local) = split_qname(k);
            let uri = if prefix.is_empty() { "" } else { inner.get(prefix).map_or("", String::as_str) };
            (uri, local, k.as_str(), v.as_str())
        })
        .collect();
    attrs.sort();
    out.push('<');
    out.push_str(&el.qname);
    for (prefix, uri) in &decls {
        out.push_str(if prefix.is_empty() { " xmlns" } else { " xmlns:" });
        out.push_str(prefix);
        out.push_str("=\"");
        escape_attr(uri, out);
        out.push('"');
    }
    for (_, _, qname, value) in &attrs {
        out.push(' ');
        out.push_str(qname);
        out.push_str("=\"");
        escape_attr(value, out);
        out.push('"');
    }
    out.push('>');
    let mut now_rendered = rendered.clone();
    for (prefix, uri) in &decls {
        now_rendered.insert((*prefix).to_owned(), (*uri).to_owned());
    }
    for child in &el.children {
        match child {
            Node::Element(c) => c14n_element(c, &inner, &now_rendered, exclude, out),
            Node::Text(t) => escape_text(t, out),
            Node::Comment(_) => {}
            Node::Pi(t, d) => render_pi(t, d, out),
        }
    }
    out.push_str("</");
    out.push_str(&el.qname);
    out.push('>');
}

/// A processing instruction in canonical form.
fn render_pi(target: &str, data: &str, out: &mut String) {
    out.push_str("<?");
    out.push_str(target);
    if !data.is_empty() {
        out.push(' ');
        out.push_str(data);
    }
    out.push_str("?>");
}

/// Canonical XML 1.1 of the whole document without comments, leaving out the element `exclude`
/// (the enveloped-signature transform).
pub fn canonicalize_document(doc: &Document, exclude: Option<&Element>) -> String {
    let mut out = String::new();
    let pi = |n: &Node, out: &mut String| {
        if let Node::Pi(t, d) = n {
            render_pi(t, d, out);
        }
    };
    for n in &doc.before {
        pi(n, &mut out);
        out.push('\n');
    }
    c14n_element(&doc.root, &Namespaces::new(), &Namespaces::new(), exclude.map(|e| e as *const Element), &mut out);
    for n in &doc.after {
        out.push('\n');
        pi(n, &mut out);
    }
    out
}

/// Canonical XML 1.1 of the subtree at `el`, whose parent's in-scope bindings are `scope`: the
/// apex outputs every namespace in scope (inclusive canonicalisation).
pub fn canonicalize_subtree(el: &Element, scope: &Namespaces) -> String {
    let mut out = String::new();
    c14n_element(el, scope, &Namespaces::new(), None, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_basics() {
        let doc = parse(
            b"<?xml version=\"1.0\"?>\n<!-- c -->\n<a xmlns=\"urn:a\" xmlns:b=\"urn:b\" z=\"1\" b:y=\"2&#xA;3\" x='&lt;&amp;\"'><b:c xmlns:b=\"urn:b\"/>t&amp;\r\n<![CDATA[<x>]]></a>",
        )
        .unwrap();
        let c14n = canonicalize_document(&doc, None);
        assert_eq!(
            c14n,
            "<a xmlns=\"urn:a\" xmlns:b=\"urn:b\" x=\"&lt;&amp;&quot;\" z=\"1\" b:y=\"2&#xA;3\"><b:c></b:c>t&amp;\n&lt;x&gt;</a>"
        );
        let inner = doc.root.elements().next().unwrap();
        let scope = doc.root.scope(&Namespaces::new());
        assert_eq!(canonicalize_subtree(inner, &scope), "<b:c xmlns=\"urn:a\" xmlns:b=\"urn:b\"></b:c>");
    }

    #[test]
    fn attribute_whitespace_is_normalised_and_undefined_things_refused() {
        let doc = parse(b"<a v=\"x\ty\nz\"/>").unwrap();
        assert_eq!(doc.root.attr("v"), Some("x y z"));
        assert!(parse(b"<!DOCTYPE a [<!ENTITY e \"x\">]><a>&e;</a>").is_err());
        assert!(parse(b"<a>&e;</a>").is_err());
        assert!(parse(b"<a><b></a>").is_err());
        assert!(parse(b"<a x=\"1\" x=\"2\"/>").is_err());
        assert!(parse(b"<a/><b/>").is_err());
    }
}
