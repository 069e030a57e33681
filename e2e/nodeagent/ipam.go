package nodeagent

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// PodIPAnnotation, when set on a pod, is the pod's IP; otherwise the agent allocates one from 127.0.1.0/24. Any
// 127.0.0.0/8 address is local on Linux, so a pod can listen on its own IP without network configuration.
const PodIPAnnotation = "localenv.hcpsnap.io/pod-ip"

// PodIPsAnnotation maps pod names to IPs, "etcd-0=127.0.0.11,etcd-1=127.0.0.12,...". It is meant for the template of
// a StatefulSet, whose pods share one set of annotations: a pod listed by name gets that IP, and the other pods listed
// are its peers, whose names in the pod's subdomain the agent writes into its /etc/hosts.
const PodIPsAnnotation = "localenv.hcpsnap.io/pod-ips"

// parsePodIPs parses the value of PodIPsAnnotation.
func parsePodIPs(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		name, ip, ok := strings.Cut(strings.TrimSpace(kv), "=")
		a, err := netip.ParseAddr(ip)
		if !ok || name == "" || err != nil || !a.Is4() {
			return nil, fmt.Errorf("annotation %s: entry %q is not <pod name>=<IPv4 address>", PodIPsAnnotation, kv)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("annotation %s: pod %s is listed twice", PodIPsAnnotation, name)
		}
		out[name] = a.String()
	}
	return out, nil
}

// annotatedIP returns the IP a pod's annotations give it ("" when none does) and the peers PodIPsAnnotation lists.
// PodIPAnnotation wins over PodIPsAnnotation.
func annotatedIP(pod *corev1.Pod) (string, map[string]string, error) {
	var peers map[string]string
	if v, ok := pod.Annotations[PodIPsAnnotation]; ok {
		var err error
		if peers, err = parsePodIPs(v); err != nil {
			return "", nil, err
		}
	}
	if ip := pod.Annotations[PodIPAnnotation]; ip != "" {
		return ip, peers, nil
	}
	return peers[pod.Name], peers, nil
}

// ipPool hands out addresses of a /24 to pods, one per pod UID, skipping the network, .1 (which Debian maps to the
// machine's host name) and broadcast addresses, and any address in use by an annotated pod.
type ipPool struct {
	mu      sync.Mutex
	prefix  netip.Prefix
	byUID   map[types.UID]netip.Addr
	inUse   map[netip.Addr]types.UID
	pinned  map[types.UID]netip.Addr
	pinUsed map[netip.Addr]int
}

func newIPPool(cidr string) (*ipPool, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil, err
	}
	if !p.Addr().Is4() || p.Bits() < 16 {
		return nil, fmt.Errorf("pool %s: want an IPv4 prefix of /16 or longer", cidr)
	}
	return &ipPool{
		prefix:  p.Masked(),
		byUID:   map[types.UID]netip.Addr{},
		inUse:   map[netip.Addr]types.UID{},
		pinned:  map[types.UID]netip.Addr{},
		pinUsed: map[netip.Addr]int{},
	}, nil
}

// assign returns the IP of a pod: the annotated one when given, else the one already allocated to the UID, else the
// previous one (from the pod's status, after an agent restart) when it is in the pool and free, else the lowest free
// address.
func (p *ipPool) assign(uid types.UID, annotated, previous string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if annotated != "" {
		a, err := netip.ParseAddr(annotated)
		if err != nil {
			return "", fmt.Errorf("annotation %s: %w", PodIPAnnotation, err)
		}
		if old, ok := p.pinned[uid]; !ok || old != a {
			p.releaseLocked(uid)
			p.pinned[uid] = a
			p.pinUsed[a]++
		}
		return a.String(), nil
	}
	if a, ok := p.byUID[uid]; ok {
		return a.String(), nil
	}
	if prev, err := netip.ParseAddr(previous); err == nil && p.usable(prev) {
		p.take(uid, prev)
		return prev.String(), nil
	}
	for a := p.prefix.Addr(); p.prefix.Contains(a); a = a.Next() {
		if p.usable(a) {
			p.take(uid, a)
			return a.String(), nil
		}
	}
	return "", fmt.Errorf("pool %s is exhausted", p.prefix)
}

func (p *ipPool) usable(a netip.Addr) bool {
	if !p.prefix.Contains(a) {
		return false
	}
	last := a.As4()[3]
	if last == 0 || last == 1 || last == 255 {
		return false
	}
	_, used := p.inUse[a]
	return !used && p.pinUsed[a] == 0
}

func (p *ipPool) take(uid types.UID, a netip.Addr) {
	p.byUID[uid] = a
	p.inUse[a] = uid
}

// release frees the address of a pod.
func (p *ipPool) release(uid types.UID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.releaseLocked(uid)
}

func (p *ipPool) releaseLocked(uid types.UID) {
	if a, ok := p.byUID[uid]; ok {
		delete(p.byUID, uid)
		delete(p.inUse, a)
	}
	if a, ok := p.pinned[uid]; ok {
		delete(p.pinned, uid)
		if p.pinUsed[a]--; p.pinUsed[a] <= 0 {
			delete(p.pinUsed, a)
		}
	}
}
