package localenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/log"
)

// fixedPorts are the environment's loopback ports. Most lie in Linux's
// ephemeral range (32768-60999 by default), from which the kernel picks the
// local port of an outgoing connection: any client on the machine (a module
// download, kube-apiserver's own etcd client) may hold one of them for a
// while, and the daemon that wants it then fails with "address already in
// use".
var fixedPorts = []int{NodeAgentPort, MgmtEtcdClientPort, MgmtEtcdPeerPort, APIServerPort, S3Port, S3Port + 1}

const reservedPortsFile = "/proc/sys/net/ipv4/ip_local_reserved_ports"

// reservePorts adds the fixed ports to the kernel's reserved ports, so that
// no outgoing connection is given one from now on. It needs root; without
// it the environment still starts, with the rare collision left possible.
func reservePorts(logger *log.Logger) {
	data, err := os.ReadFile(reservedPortsFile)
	if err != nil {
		logger.Warn("cannot read the reserved ports; an outgoing connection may take a port of the environment", "err", err)
		return
	}
	list, missing := mergePorts(strings.TrimSpace(string(data)), fixedPorts)
	if len(missing) == 0 {
		return
	}
	if err := os.WriteFile(reservedPortsFile, []byte(list), 0o644); err != nil {
		logger.Warn("cannot reserve the environment's ports; an outgoing connection may take one", "ports", missing, "err", err)
		return
	}
	logger.Info("reserved the environment's ports from the ephemeral range", "ports", missing)
}

// mergePorts adds ports to a reserved-ports list as the kernel writes it
// ("30250,32379-32380"), returning the new list and the ports it lacked.
func mergePorts(current string, ports []int) (string, []int) {
	var missing []int
	for _, p := range ports {
		if !portListed(current, p) {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return current, nil
	}
	parts := []string{}
	if current != "" {
		parts = append(parts, current)
	}
	for _, p := range missing {
		parts = append(parts, strconv.Itoa(p))
	}
	return strings.Join(parts, ","), missing
}

// portListed reports whether a reserved-ports list holds port, alone or in
// a range.
func portListed(list string, port int) bool {
	for _, item := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(item), "-")
		if !isRange {
			hi = lo
		}
		l, err1 := strconv.Atoi(lo)
		h, err2 := strconv.Atoi(hi)
		if err1 == nil && err2 == nil && l <= port && port <= h {
			return true
		}
	}
	return false
}

// waitPortsFree waits until every fixed port can be bound on 127.0.0.1: a
// connection that took one before it was reserved ends within a while.
func waitPortsFree(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var busy []int
		for _, p := range fixedPorts {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				busy = append(busy, p)
				continue
			}
			_ = l.Close()
		}
		if len(busy) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("ports " + strings.Trim(fmt.Sprint(busy), "[]") + " on 127.0.0.1 are in use (ss -ltnp; ss -tnp): stop what holds them, or wait for its connections to end")
		}
		time.Sleep(500 * time.Millisecond)
	}
}
