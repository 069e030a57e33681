package nodeagent

import (
	"fmt"
	"net/url"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// defaultPath is the PATH of a container whose env does not set one, as images usually do.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// objectSource reads the Secrets and ConfigMaps that env and volumes refer to.
type objectSource interface {
	secret(namespace, name string) (map[string][]byte, error)
	configMap(namespace, name string) (map[string]string, error)
}

// envVar is one variable of a container's environment, in order.
type envVar struct {
	Name, Value string
}

// containerEnv computes the environment of a container as the kubelet and its runtime do: base (the image's Env, or
// a default PATH, and the in-cluster service variables), HOSTNAME, then envFrom, then env in order, each value
// expanded with $(VAR) against the variables defined before it; a later definition replaces an earlier one. objects
// may be nil when the container refers to no Secret or ConfigMap.
func containerEnv(pod *corev1.Pod, c *corev1.Container, base []envVar, podIP, hostIP string, objects objectSource) ([]envVar, error) {
	var vars []envVar
	index := map[string]int{}
	set := func(name, value string) {
		if i, ok := index[name]; ok {
			vars[i].Value = value
			return
		}
		index[name] = len(vars)
		vars = append(vars, envVar{Name: name, Value: value})
	}
	lookup := func(name string) (string, bool) {
		if i, ok := index[name]; ok {
			return vars[i].Value, true
		}
		return "", false
	}
	for _, e := range base {
		set(e.Name, e.Value)
	}
	set("HOSTNAME", hostnameFor(pod))
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			data, err := optionalGet(objects, from.ConfigMapRef.Optional, func(o objectSource) (map[string]string, error) {
				return o.configMap(pod.Namespace, from.ConfigMapRef.Name)
			})
			if err != nil {
				return nil, fmt.Errorf("envFrom configMap %s: %w", from.ConfigMapRef.Name, err)
			}
			for _, k := range sortedKeys(data) {
				set(from.Prefix+k, data[k])
			}
		case from.SecretRef != nil:
			data, err := optionalGet(objects, from.SecretRef.Optional, func(o objectSource) (map[string][]byte, error) {
				return o.secret(pod.Namespace, from.SecretRef.Name)
			})
			if err != nil {
				return nil, fmt.Errorf("envFrom secret %s: %w", from.SecretRef.Name, err)
			}
			for _, k := range sortedKeys(data) {
				set(from.Prefix+k, string(data[k]))
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, lookup))
			continue
		}
		v, ok, err := envValueFrom(pod, e.ValueFrom, podIP, hostIP, objects)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if ok {
			set(e.Name, v)
		}
	}
	return vars, nil
}

// baseEnv is what a container's environment starts from: the image's Env (with the default PATH when it sets
// none) or, without an image, the default PATH; then the variables that point in-cluster clients at the API server.
func baseEnv(img *containerImage, service []envVar) []envVar {
	var base []envVar
	if img != nil {
		base = imageEnv(img.Config)
	}
	hasPath := false
	for _, e := range base {
		hasPath = hasPath || e.Name == "PATH"
	}
	if !hasPath {
		base = append([]envVar{{Name: "PATH", Value: defaultPath}}, base...)
	}
	return append(base, service...)
}

// serviceEnv is KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT for the API server at host (a URL, as in a
// kubeconfig), which client-go's in-cluster configuration reads; the kubelet sets them in every container.
func serviceEnv(host string) ([]envVar, error) {
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("API server %q: %w", host, err)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return []envVar{{Name: "KUBERNETES_SERVICE_HOST", Value: u.Hostname()}, {Name: "KUBERNETES_SERVICE_PORT", Value: port}}, nil
}

// optionalGet reads an object, treating a missing one as empty when optional.
func optionalGet[T any](objects objectSource, optional *bool, get func(objectSource) (T, error)) (T, error) {
	var zero T
	if objects == nil {
		return zero, fmt.Errorf("no object source")
	}
	v, err := get(objects)
	if err != nil && optional != nil && *optional && isNotFound(err) {
		return zero, nil
	}
	return v, err
}

// envValueFrom resolves a valueFrom; ok is false when an optional key is missing.
func envValueFrom(pod *corev1.Pod, from *corev1.EnvVarSource, podIP, hostIP string, objects objectSource) (string, bool, error) {
	switch {
	case from.FieldRef != nil:
		v, err := podField(pod, from.FieldRef.FieldPath, podIP, hostIP)
		return v, err == nil, err
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		data, err := optionalGet(objects, ref.Optional, func(o objectSource) (map[string]string, error) {
			return o.configMap(pod.Namespace, ref.Name)
		})
		if err != nil {
			return "", false, err
		}
		v, ok := data[ref.Key]
		if !ok && (ref.Optional == nil || !*ref.Optional) {
			return "", false, fmt.Errorf("configMap %s has no key %s", ref.Name, ref.Key)
		}
		return v, ok, nil
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		data, err := optionalGet(objects, ref.Optional, func(o objectSource) (map[string][]byte, error) {
			return o.secret(pod.Namespace, ref.Name)
		})
		if err != nil {
			return "", false, err
		}
		v, ok := data[ref.Key]
		if !ok && (ref.Optional == nil || !*ref.Optional) {
			return "", false, fmt.Errorf("secret %s has no key %s", ref.Name, ref.Key)
		}
		return string(v), ok, nil
	default:
		return "", false, fmt.Errorf("unsupported valueFrom (only fieldRef, configMapKeyRef and secretKeyRef)")
	}
}

// podField resolves the fieldRef paths the downward API offers for env.
func podField(pod *corev1.Pod, path, podIP, hostIP string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return podIP, nil
	case "status.podIPs":
		return podIP, nil
	case "status.hostIP", "status.hostIPs":
		return hostIP, nil
	}
	for prefix, m := range map[string]map[string]string{
		"metadata.labels":      pod.Labels,
		"metadata.annotations": pod.Annotations,
	} {
		if strings.HasPrefix(path, prefix+"['") && strings.HasSuffix(path, "']") {
			return m[path[len(prefix)+2:len(path)-2]], nil
		}
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

// expand replaces $(NAME) in s by the value of NAME when lookup knows it and leaves it as written otherwise; $$ is a
// literal $, so $$(NAME) yields $(NAME). These are the rules of Kubernetes' command, args and env expansion.
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok && name != "" {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// expandAll expands each of args against env.
func expandAll(args []string, env []envVar) []string {
	m := make(map[string]string, len(env))
	for _, e := range env {
		m[e.Name] = e.Value
	}
	lookup := func(n string) (string, bool) { v, ok := m[n]; return v, ok }
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = expand(a, lookup)
	}
	return out
}

// environ formats env for os/exec.
func environ(env []envVar) []string {
	out := make([]string, len(env))
	for i, e := range env {
		out[i] = e.Name + "=" + e.Value
	}
	return out
}
