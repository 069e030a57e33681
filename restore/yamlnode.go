package restore

import (
	"sort"

	"gopkg.in/yaml.v3"
)

// These helpers edit gopkg.in/yaml.v3 nodes in place, so a changed document
// keeps its key order, styles and comments.

// resolve follows aliases to the node they stand for.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

func isMap(n *yaml.Node) bool { return n != nil && n.Kind == yaml.MappingNode }

// isNull tells whether a value is absent or an explicit null.
func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// keyIndex returns the index in m.Content of the first key named key, or -1.
func keyIndex(m *yaml.Node, key string) int {
	if !isMap(m) {
		return -1
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k := m.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key {
			return i
		}
	}
	return -1
}

// get returns the value of key in the mapping m, aliases resolved, or nil.
func get(m *yaml.Node, key string) *yaml.Node {
	if i := keyIndex(resolve(m), key); i >= 0 {
		return resolve(resolve(m).Content[i+1])
	}
	return nil
}

// path follows keys through nested mappings.
func path(m *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		m = get(m, k)
	}
	return m
}

// str returns the value of a scalar, or "" for anything else.
func str(n *yaml.Node) string {
	if n = resolve(n); n != nil && n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return n.Value
	}
	return ""
}

// set replaces the value of key in m, or appends the pair when m lacks key.
func set(m *yaml.Node, key string, v *yaml.Node) {
	if i := keyIndex(m, key); i >= 0 {
		old := m.Content[i+1]
		// Keep the comments that sat on the value being replaced.
		if v.LineComment == "" {
			v.LineComment = old.LineComment
		}
		m.Content[i+1] = v
		return
	}
	m.Content = append(m.Content, strNode(key), v)
}

// del removes key from m.
func del(m *yaml.Node, key string) {
	if i := keyIndex(m, key); i >= 0 {
		m.Content = append(m.Content[:i], m.Content[i+2:]...)
	}
}

// child returns the mapping under key, creating it when absent or null. It
// returns nil when the key holds something other than a mapping.
func child(m *yaml.Node, key string) *yaml.Node {
	v := get(m, key)
	if isNull(v) {
		v = mapNode()
		set(m, key, v)
	}
	if !isMap(v) {
		return nil
	}
	return v
}

func strNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

func mapNode(kv ...any) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for i := 0; i+1 < len(kv); i += 2 {
		var v *yaml.Node
		switch x := kv[i+1].(type) {
		case string:
			v = strNode(x)
		case *yaml.Node:
			v = x
		}
		m.Content = append(m.Content, strNode(kv[i].(string)), v)
	}
	return m
}

// stringMap turns a map of strings into a mapping with sorted keys, the
// order kubectl and the hypershift CLI write.
func stringMap(in map[string]string) *yaml.Node {
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	m := mapNode()
	for _, k := range keys {
		m.Content = append(m.Content, strNode(k), strNode(in[k]))
	}
	return m
}
