package nodeagent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeLoop evaluates a container's readiness probe every period while the pod runs, flipping ProbeReady after
// successThreshold successes or failureThreshold failures in a row, as the kubelet's prober does.
func (rt *podRuntime) probeLoop(c *containerRun) {
	p := c.spec.ReadinessProbe
	period := seconds(p.PeriodSeconds, 10)
	timeout := seconds(p.TimeoutSeconds, 1)
	delay := time.Duration(p.InitialDelaySeconds) * time.Second
	successes, failures := 0, 0
	tick := time.NewTicker(period)
	defer tick.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case <-rt.ctx.Done():
				return
			case <-tick.C:
			}
		}
		rt.mu.Lock()
		running, startedAt, ready := c.snap.Running, c.snap.StartedAt, c.snap.ProbeReady
		rt.mu.Unlock()
		if !running {
			successes, failures = 0, 0
			continue
		}
		if time.Since(startedAt) < delay {
			continue
		}
		err := rt.probe(c, p, timeout)
		if rt.a.notReady(rt.key) {
			// An injected fault: fail at once, not after failureThreshold probes.
			err, failures = errors.New("held not Ready (injected fault)"), int(max(p.FailureThreshold, 1))-1
		}
		if err == nil {
			successes, failures = successes+1, 0
		} else {
			successes, failures = 0, failures+1
		}
		switch {
		case !ready && successes >= int(max(p.SuccessThreshold, 1)):
			rt.update(c, func(s *containerSnapshot) { s.ProbeReady = s.Running })
		case ready && failures >= int(max(p.FailureThreshold, 1)):
			rt.a.log.Info("readiness probe failed", "pod", rt.key, "container", c.spec.Name, "err", err)
			rt.update(c, func(s *containerSnapshot) { s.ProbeReady = false })
		}
	}
}

func seconds(v int32, def int) time.Duration {
	if v <= 0 {
		return time.Duration(def) * time.Second
	}
	return time.Duration(v) * time.Second
}

// probe runs one probe: exec in the pod's sandbox, a TCP connection or an HTTP GET to the pod IP.
func (rt *podRuntime) probe(c *containerRun, p *corev1.Probe, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(rt.ctx, timeout)
	defer cancel()
	switch {
	case p.Exec != nil:
		code, err := rt.exec(ctx, c, p.Exec.Command, execStreams{})
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("exit code %d", code)
		}
		return nil
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, &c.spec)
		if err != nil {
			return err
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = rt.ip
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case p.HTTPGet != nil:
		port, err := resolvePort(p.HTTPGet.Port, &c.spec)
		if err != nil {
			return err
		}
		host := p.HTTPGet.Host
		if host == "" {
			host = rt.ip
		}
		scheme := "http"
		if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		url := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), p.HTTPGet.Path)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		for _, h := range p.HTTPGet.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		// The kubelet does not verify the certificates of the pods it probes.
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP status %d", resp.StatusCode)
		}
		return nil
	default:
		return fmt.Errorf("unsupported probe handler")
	}
}

// resolvePort turns a probe's port, a number or the name of a container port, into a number.
func resolvePort(port intstr.IntOrString, c *corev1.Container) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, port.StrVal)
}
