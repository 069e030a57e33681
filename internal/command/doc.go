// Package command owns hcpsnap's command line: the urfave/cli/v3 command tree,
// the global options every command shares, and the wiring of each command's
// options struct (Complete, Validate, Run, as kubectl's commands do). Actions
// here only call those three; the work lives in the packages they call.
//
// Layer: command line, the top: it imports the workflows (steps, restore),
// the engine (runbook) and the adapters, and nothing imports it but main.
package command
