package restore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// segment is one document of the input stream, kept as the exact bytes it
// came from so that an unchanged document is written back untouched.
type segment struct {
	raw     []byte     // the exact input bytes, from its "---" line (if any) to the next boundary
	doc     *yaml.Node // the parsed DocumentNode; nil when the segment holds only comments or blanks
	num     int        // 1-based number among the segments that hold a document, for messages
	line    int        // 1-based line of the stream where the segment starts
	changed bool       // re-encode doc instead of writing raw
}

// splitStream cuts a YAML stream at its document boundaries: a line that
// starts with "---" followed by a blank or the end of the line begins a
// document, a "..." line ends one. Directive lines ("%YAML") stay with the
// document they introduce. It never loses a byte: joining the raw segments
// gives the input back.
func splitStream(data []byte) []segment {
	var segs []segment
	start, startLine, line := 0, 1, 1
	onlyDirectives := true // the current segment holds only comments, blanks and directives
	cut := func(end, nextLine int) {
		if end > start {
			segs = append(segs, segment{raw: data[start:end], line: startLine})
		}
		start, startLine, onlyDirectives = end, nextLine, true
	}
	for off := 0; off < len(data); line++ {
		end := bytes.IndexByte(data[off:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += off + 1
		}
		l := data[off:end]
		switch {
		case isMarker(l, "---"):
			// Directives belong to the document that this marker starts.
			if !(onlyDirectives && hasDirective(data[start:off])) {
				cut(off, line)
			}
			onlyDirectives = false
		case isMarker(l, "..."):
			cut(end, line+1)
			off = end
			continue
		default:
			t := bytes.TrimSpace(l)
			if len(t) > 0 && t[0] != '#' && t[0] != '%' {
				onlyDirectives = false
			}
		}
		off = end
	}
	cut(len(data), line)
	return segs
}

// isMarker tells whether line is the document marker m ("---" or "...")
// followed by a blank or the end of the line.
func isMarker(line []byte, m string) bool {
	if !bytes.HasPrefix(line, []byte(m)) {
		return false
	}
	rest := line[len(m):]
	return len(rest) == 0 || rest[0] == ' ' || rest[0] == '\t' || rest[0] == '\r' || rest[0] == '\n'
}

func hasDirective(b []byte) bool {
	for _, l := range bytes.Split(b, []byte("\n")) {
		if bytes.HasPrefix(l, []byte("%")) {
			return true
		}
	}
	return false
}

// parseStream splits and parses the stream. The error names the document
// that failed, by number and first line, and holds only the parser's message,
// never the input's text.
func parseStream(data []byte) ([]segment, error) {
	segs := splitStream(data)
	num := 0
	for i := range segs {
		s := &segs[i]
		dec := yaml.NewDecoder(bytes.NewReader(s.raw))
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			continue
		}
		num++
		s.num = num
		if err == nil {
			var extra yaml.Node
			if err2 := dec.Decode(&extra); !errors.Is(err2, io.EOF) {
				err = errors.New("more than one document where one was expected")
				if err2 != nil {
					err = err2
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("render document %d (from line %d) is not YAML: %s; fix it or render it again",
				num, s.line, streamLines(yamlMessage(err), s.line))
		}
		s.doc = &doc
	}
	return segs, nil
}

// yamlMessage keeps the first line of a parser error: yaml.v3 messages say
// where and what went wrong without quoting the input.
func yamlMessage(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return msg
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// streamLines turns the line number of a parser message, counted from the
// start of the document's segment, into one counted from the start of the
// stream, which is what the user's editor shows. yaml.v3 counts parser
// errors from the start of the construct that failed, so the line is near
// the error rather than on it.
func streamLines(msg string, first int) string {
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return msg
	}
	return fmt.Sprintf("near line %d: %s", first+n-1, msg[len(m[0]):])
}

// encodeDoc writes one document as YAML with two-space indentation, in the
// line endings of the original segment.
func encodeDoc(doc *yaml.Node, crlf bool) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	out := buf.Bytes()
	if crlf {
		out = bytes.ReplaceAll(out, []byte("\n"), []byte("\r\n"))
	}
	return out, nil
}

// encodeChecked encodes a document and reads it back: yaml.v3's emitter
// can misplace a comment so that the text no longer means the same. When
// that happens the document is encoded again without its comments, which
// loses them but never the data.
func encodeChecked(doc *yaml.Node, crlf bool) ([]byte, error) {
	for _, strip := range []bool{false, true} {
		if strip {
			stripComments(doc)
		}
		enc, err := encodeDoc(doc, crlf)
		if err != nil {
			continue
		}
		var back yaml.Node
		if err := yaml.Unmarshal(enc, &back); err != nil || !sameNode(doc, &back, 0) {
			continue
		}
		return enc, nil
	}
	return nil, errors.New("cannot be written back as YAML that means the same; simplify its comments or anchors and try again")
}

// sameNode tells whether two trees hold the same data: kinds, tags, scalar
// values and structure, ignoring comments, styles and positions.
func sameNode(a, b *yaml.Node, depth int) bool {
	if a == nil || b == nil || depth > 10000 {
		return a == b
	}
	if a.Kind != b.Kind {
		return false
	}
	switch a.Kind {
	case yaml.AliasNode:
		return sameNode(a.Alias, b.Alias, depth+1)
	case yaml.ScalarNode:
		return a.ShortTag() == b.ShortTag() && a.Value == b.Value
	}
	if len(a.Content) != len(b.Content) {
		return false
	}
	for i := range a.Content {
		if !sameNode(a.Content[i], b.Content[i], depth+1) {
			return false
		}
	}
	return true
}

func stripComments(n *yaml.Node) {
	if n == nil {
		return
	}
	n.HeadComment, n.LineComment, n.FootComment = "", "", ""
	for _, c := range n.Content {
		stripComments(c)
	}
}

// markerLine returns the "---" line a re-encoded document starts with: the
// segment's own when it is a bare marker, else a plain one (a marker line
// that carries content or a comment is parsed into the document itself).
func markerLine(raw []byte, crlf bool) []byte {
	nl := "\n"
	if crlf {
		nl = "\r\n"
	}
	if !isMarker(raw, "---") {
		return nil
	}
	end := bytes.IndexByte(raw, '\n')
	if end >= 0 && len(bytes.TrimSpace(raw[:end])) == 3 {
		return raw[:end+1]
	}
	return []byte("---" + nl)
}

// joinStream writes the segments back, re-encoding only the changed ones,
// followed by the new documents.
func joinStream(segs []segment, added []*yaml.Node) ([]byte, error) {
	var out bytes.Buffer
	crlfStream := false
	for i := range segs {
		s := &segs[i]
		crlf := bytes.Contains(s.raw, []byte("\r\n"))
		crlfStream = crlfStream || crlf
		if !s.changed {
			out.Write(s.raw)
			continue
		}
		enc, err := encodeChecked(s.doc, crlf)
		if err != nil {
			return nil, fmt.Errorf("render document %d: %s", s.num, err)
		}
		if m := markerLine(s.raw, crlf); m != nil {
			out.Write(m)
		} else if i > 0 {
			// A document that did not start with a marker can only be the
			// first; keep it separated from its predecessor anyway.
			out.WriteString("---\n")
		}
		out.Write(enc)
	}
	nl := "\n"
	if crlfStream {
		nl = "\r\n"
	}
	for _, n := range added {
		if out.Len() > 0 {
			if b := out.Bytes(); b[len(b)-1] != '\n' {
				out.WriteString(nl)
			}
			out.WriteString("---" + nl)
		}
		enc, err := encodeChecked(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{n}}, crlfStream)
		if err != nil {
			return nil, fmt.Errorf("an added document: %s", err)
		}
		out.Write(enc)
	}
	return out.Bytes(), nil
}
