// Package logging builds hcpsnap's one logger. Logs go to stderr, as text for
// people or JSON lines for machines; results never go through it (they go to
// stdout through the command's printer). The logger travels in the context
// (charmbracelet/log's WithContext/FromContext), and each step adds its
// `step` field.
//
// Layer: helper, shared by every layer. It imports nothing of hcpsnap.
package logging
