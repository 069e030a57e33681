package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// FaultsFile is the file, in the agent's state folder, from which e2e tests
// inject failures a real node can have. It is read on every exec, probe and
// new forwarded stream, so writing or removing it takes effect at once;
// absent means no fault. Write it with WriteFaults.
const FaultsFile = "faults.json"

// Faults are the failures the agent injects.
type Faults struct {
	// CutExec cuts matching exec streams, as a node or network failure would.
	CutExec []CutExec `json:"cutExec,omitempty"`
	// CutPortForward cuts matching forwarded streams (pods/portforward).
	CutPortForward []CutPortForward `json:"cutPortForward,omitempty"`
	// NotReady marks pods (namespace/name) not Ready, whatever their probe says.
	NotReady []string `json:"notReady,omitempty"`
}

// CutExec cuts the exec streams of Pod (namespace/name) whose command line
// contains Match: after AfterBytes bytes of output, or AfterMillis after the
// start, the command is killed and the stream ends with an error.
type CutExec struct {
	Pod         string `json:"pod"`
	Match       string `json:"match"`
	AfterBytes  int64  `json:"afterBytes,omitempty"`
	AfterMillis int    `json:"afterMillis,omitempty"`
}

// CutPortForward cuts the forwarded streams of Pod (namespace/name) to Port
// (0: every port). Each stream (one connection through the port-forward)
// counts on its own: once AfterBytes bytes of the pod's data reached the
// client, the pod's connection is reset and the stream ends with an error on
// its error channel, as when the connection to the pod is lost. AfterBytes 0
// cuts the stream as soon as it is connected.
type CutPortForward struct {
	Pod        string `json:"pod"`
	Port       int32  `json:"port,omitempty"`
	AfterBytes int64  `json:"afterBytes"`
}

// errCut is how a cut exec ends.
var errCut = errors.New("exec stream cut by the node agent (injected fault)")

// faults reads the faults file; any problem reading it means no fault.
func (a *agent) faults() Faults {
	var f Faults
	data, err := os.ReadFile(filepath.Join(a.cfg.StateDir, FaultsFile))
	if err == nil {
		_ = json.Unmarshal(data, &f)
	}
	return f
}

// notReady reports whether a fault holds the pod not Ready.
func (a *agent) notReady(podKey string) bool {
	for _, p := range a.faults().NotReady {
		if p == podKey {
			return true
		}
	}
	return false
}

// cutFor returns the cut that applies to an exec, if any.
func (a *agent) cutFor(podKey string, cmd []string) *CutExec {
	line := strings.Join(cmd, " ")
	for _, c := range a.faults().CutExec {
		if c.Pod == podKey && strings.Contains(line, c.Match) {
			return &c
		}
	}
	return nil
}

// portForwardCutFor returns the cut that applies to a new forwarded stream, if any.
func (a *agent) portForwardCutFor(podKey string, port int32) *CutPortForward {
	for _, c := range a.faults().CutPortForward {
		if c.Pod == podKey && (c.Port == 0 || c.Port == port) {
			return &c
		}
	}
	return nil
}

// WriteFaults replaces the faults file in the agent's state folder stateDir
// (.localenv/nodeagent in the local environment). The file is replaced in
// one rename, so the agent never reads half of it.
func WriteFaults(stateDir string, f Faults) error {
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(stateDir, FaultsFile+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(stateDir, FaultsFile))
}

// cutWriter passes output through until its budget is spent, then cancels
// the exec and fails every later write.
type cutWriter struct {
	w      io.Writer
	left   int64
	cancel context.CancelFunc
	mu     sync.Mutex
	cut    bool
}

func (c *cutWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return 0, errCut
	}
	if int64(len(p)) > c.left {
		n, _ := c.w.Write(p[:c.left])
		c.cut = true
		c.cancel()
		return n, errCut
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}

// armCut applies a cut to an exec: it returns the (possibly wrapped) output
// writer, and a function that reports whether the cut happened.
func armCut(cut *CutExec, out io.Writer, cancel context.CancelFunc) (io.Writer, func() bool) {
	if cut == nil {
		return out, func() bool { return false }
	}
	var fired sync.Once
	var happened bool
	fire := func() { fired.Do(func() { happened = true; cancel() }) }
	if cut.AfterMillis > 0 {
		time.AfterFunc(time.Duration(cut.AfterMillis)*time.Millisecond, fire)
	}
	if cut.AfterBytes > 0 && out != nil {
		cw := &cutWriter{w: out, left: cut.AfterBytes, cancel: fire}
		return cw, func() bool { cw.mu.Lock(); defer cw.mu.Unlock(); return cw.cut || happened }
	}
	return out, func() bool { return happened }
}
