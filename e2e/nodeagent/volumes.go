package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
)

// volumeWriter fills the folders of a pod's volumes.
type volumeWriter struct {
	objects objectSource
	// token requests a service account token for a projected volume; nil disables such sources.
	token func(ctx context.Context, namespace, serviceAccount string, req *authenticationv1.TokenRequest) (string, error)
	// claim finds the volume bound to a PersistentVolumeClaim; nil disables such volumes.
	claim func(ctx context.Context, namespace, claim string) (claimedVolume, error)
	// filesystem prepares the file system of a local volume at a path; ensureFilesystem unless a test replaces it.
	filesystem func(path string, size int64) error
}

// prepareVolumes creates the volumes of pod below volDir and returns the host path of each volume by name. Secret,
// ConfigMap and projected volumes are written afresh; emptyDir folders are kept, so their content lives as long as
// the pod's folder; hostPath volumes are the host path itself.
func (w *volumeWriter) prepareVolumes(ctx context.Context, pod *corev1.Pod, volDir string) (map[string]string, error) {
	paths := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(volDir, v.Name)
		var err error
		switch {
		case v.EmptyDir != nil:
			// World-writable whatever the umask, as the kubelet makes it, so that a container's non-root user
			// can write there.
			if err = os.MkdirAll(dir, 0o777); err == nil {
				err = os.Chmod(dir, 0o777)
			}
		case v.HostPath != nil:
			dir, err = hostPathVolume(v.HostPath)
		case v.Secret != nil:
			err = w.secretVolume(pod, v.Secret, dir)
		case v.ConfigMap != nil:
			err = w.configMapVolume(pod, v.ConfigMap, dir)
		case v.Projected != nil:
			err = w.projectedVolume(ctx, pod, v.Projected, dir)
		case v.DownwardAPI != nil:
			err = writeFiles(dir, downwardFiles(pod, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode))
		case v.PersistentVolumeClaim != nil:
			dir, err = w.claimVolume(ctx, pod, v.PersistentVolumeClaim.ClaimName)
		default:
			err = errors.New("unsupported volume type (emptyDir, hostPath, secret, configMap, projected, downwardAPI and persistentVolumeClaim are)")
		}
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		paths[v.Name] = dir
	}
	return paths, nil
}

// claimVolume returns the host path of the volume bound to a claim: a local volume's file system, prepared on first
// use, or a hostPath volume's folder.
func (w *volumeWriter) claimVolume(ctx context.Context, pod *corev1.Pod, claim string) (string, error) {
	if w.claim == nil {
		return "", errors.New("persistentVolumeClaim volumes are not enabled")
	}
	v, err := w.claim(ctx, pod.Namespace, claim)
	if err != nil {
		return "", err
	}
	if !v.Local {
		return v.Path, os.MkdirAll(v.Path, 0o755)
	}
	prepare := w.filesystem
	if prepare == nil {
		prepare = ensureFilesystem
	}
	if err := prepare(v.Path, v.Bytes); err != nil {
		return "", fmt.Errorf("volume %s: %w", v.PV, err)
	}
	return v.Path, nil
}

// hostPathVolume checks a hostPath volume and creates it for the *OrCreate types.
func hostPathVolume(hp *corev1.HostPathVolumeSource) (string, error) {
	t := corev1.HostPathUnset
	if hp.Type != nil {
		t = *hp.Type
	}
	fi, err := os.Stat(hp.Path)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist) && t == corev1.HostPathDirectoryOrCreate:
		return hp.Path, os.MkdirAll(hp.Path, 0o755)
	case errors.Is(err, fs.ErrNotExist) && t == corev1.HostPathFileOrCreate:
		if err := os.MkdirAll(filepath.Dir(hp.Path), 0o755); err != nil {
			return "", err
		}
		f, err := os.OpenFile(hp.Path, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return "", err
		}
		return hp.Path, f.Close()
	default:
		return "", err
	}
	switch {
	case (t == corev1.HostPathDirectory || t == corev1.HostPathDirectoryOrCreate) && !fi.IsDir():
		return "", fmt.Errorf("%s is not a folder", hp.Path)
	case (t == corev1.HostPathFile || t == corev1.HostPathFileOrCreate) && !fi.Mode().IsRegular():
		return "", fmt.Errorf("%s is not a file", hp.Path)
	}
	return hp.Path, nil
}

// volumeFile is one file of a Secret, ConfigMap, projected or downwardAPI volume.
type volumeFile struct {
	Path string
	Data []byte
	Mode os.FileMode
}

func (w *volumeWriter) secretVolume(pod *corev1.Pod, src *corev1.SecretVolumeSource, dir string) error {
	data, err := optionalGet(w.objects, src.Optional, func(o objectSource) (map[string][]byte, error) {
		return o.secret(pod.Namespace, src.SecretName)
	})
	if err != nil {
		return err
	}
	files, err := keyFiles(data, src.Items, src.DefaultMode, 0o600, src.Optional)
	if err != nil {
		return err
	}
	return writeFiles(dir, files)
}

func (w *volumeWriter) configMapVolume(pod *corev1.Pod, src *corev1.ConfigMapVolumeSource, dir string) error {
	data, err := w.configMapBytes(pod.Namespace, src.Name, src.Optional)
	if err != nil {
		return err
	}
	files, err := keyFiles(data, src.Items, src.DefaultMode, 0o644, src.Optional)
	if err != nil {
		return err
	}
	return writeFiles(dir, files)
}

func (w *volumeWriter) configMapBytes(namespace, name string, optional *bool) (map[string][]byte, error) {
	data, err := optionalGet(w.objects, optional, func(o objectSource) (map[string]string, error) {
		return o.configMap(namespace, name)
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(data))
	for k, v := range data {
		out[k] = []byte(v)
	}
	return out, nil
}

func (w *volumeWriter) projectedVolume(ctx context.Context, pod *corev1.Pod, src *corev1.ProjectedVolumeSource, dir string) error {
	var files []volumeFile
	for _, s := range src.Sources {
		switch {
		case s.Secret != nil:
			data, err := optionalGet(w.objects, s.Secret.Optional, func(o objectSource) (map[string][]byte, error) {
				return o.secret(pod.Namespace, s.Secret.Name)
			})
			if err != nil {
				return fmt.Errorf("secret %s: %w", s.Secret.Name, err)
			}
			f, err := keyFiles(data, s.Secret.Items, src.DefaultMode, 0o600, s.Secret.Optional)
			if err != nil {
				return err
			}
			files = append(files, f...)
		case s.ConfigMap != nil:
			data, err := w.configMapBytes(pod.Namespace, s.ConfigMap.Name, s.ConfigMap.Optional)
			if err != nil {
				return fmt.Errorf("configMap %s: %w", s.ConfigMap.Name, err)
			}
			f, err := keyFiles(data, s.ConfigMap.Items, src.DefaultMode, 0o644, s.ConfigMap.Optional)
			if err != nil {
				return err
			}
			files = append(files, f...)
		case s.DownwardAPI != nil:
			files = append(files, downwardFiles(pod, s.DownwardAPI.Items, src.DefaultMode)...)
		case s.ServiceAccountToken != nil:
			if w.token == nil {
				continue
			}
			req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
				Audiences:         nonEmpty(s.ServiceAccountToken.Audience),
				ExpirationSeconds: s.ServiceAccountToken.ExpirationSeconds,
				BoundObjectRef: &authenticationv1.BoundObjectReference{
					Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID,
				},
			}}
			token, err := w.token(ctx, pod.Namespace, serviceAccountOf(pod), req)
			if err != nil {
				return fmt.Errorf("service account token: %w", err)
			}
			files = append(files, volumeFile{Path: s.ServiceAccountToken.Path, Data: []byte(token), Mode: modeOr(src.DefaultMode, 0o600)})
		}
	}
	return writeFiles(dir, files)
}

func serviceAccountOf(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	return "default"
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// downwardFiles renders the fieldRef items of a downwardAPI volume; resourceFieldRef items are skipped.
func downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, defaultMode *int32) []volumeFile {
	var files []volumeFile
	for _, it := range items {
		if it.FieldRef == nil {
			continue
		}
		var v string
		switch it.FieldRef.FieldPath {
		case "metadata.labels":
			v = formatMap(pod.Labels)
		case "metadata.annotations":
			v = formatMap(pod.Annotations)
		default:
			v, _ = podField(pod, it.FieldRef.FieldPath, pod.Status.PodIP, pod.Status.HostIP)
		}
		mode := defaultMode
		if it.Mode != nil {
			mode = it.Mode
		}
		files = append(files, volumeFile{Path: it.Path, Data: []byte(v), Mode: modeOr(mode, 0o644)})
	}
	return files
}

func formatMap(m map[string]string) string {
	var b strings.Builder
	for _, k := range sortedKeys(m) {
		fmt.Fprintf(&b, "%s=%q\n", k, m[k])
	}
	return b.String()
}

// keyFiles maps the keys of a Secret or ConfigMap to files: every key by its name, or only the listed items at their
// paths. A listed key that is missing is an error unless the source is optional.
func keyFiles(data map[string][]byte, items []corev1.KeyToPath, defaultMode *int32, fallback os.FileMode, optional *bool) ([]volumeFile, error) {
	var files []volumeFile
	if len(items) == 0 {
		for _, k := range sortedKeys(data) {
			files = append(files, volumeFile{Path: k, Data: data[k], Mode: modeOr(defaultMode, fallback)})
		}
		return files, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional != nil && *optional {
				continue
			}
			return nil, fmt.Errorf("key %s not found", it.Key)
		}
		mode := defaultMode
		if it.Mode != nil {
			mode = it.Mode
		}
		files = append(files, volumeFile{Path: it.Path, Data: v, Mode: modeOr(mode, fallback)})
	}
	return files, nil
}

func modeOr(m *int32, fallback os.FileMode) os.FileMode {
	if m == nil {
		return fallback
	}
	return os.FileMode(*m) & os.ModePerm
}

// writeFiles replaces the content of dir by files. Paths must stay inside dir.
func writeFiles(dir string, files []volumeFile) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		rel := filepath.Clean(f.Path)
		if filepath.IsAbs(rel) || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
			return fmt.Errorf("path %q leaves the volume", f.Path)
		}
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.Data, f.Mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.Mode); err != nil {
			return err
		}
	}
	return nil
}

// containerMounts returns the sandbox mounts of a container: its volumeMounts (with subPath) and the pod's hosts
// file over /etc/hosts unless the container mounts something there itself.
func containerMounts(c *corev1.Container, volumes map[string]string, hostsFile string) ([]sandboxMount, error) {
	var mounts []sandboxMount
	ownHosts := false
	for _, vm := range c.VolumeMounts {
		src, ok := volumes[vm.Name]
		if !ok {
			return nil, fmt.Errorf("container %s mounts unknown volume %s", c.Name, vm.Name)
		}
		if vm.SubPath != "" {
			rel := filepath.Clean(vm.SubPath)
			if filepath.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, "../") {
				return nil, fmt.Errorf("subPath %q leaves volume %s", vm.SubPath, vm.Name)
			}
			src = filepath.Join(src, rel)
		}
		target := filepath.Clean("/" + vm.MountPath)
		if target == "/etc/hosts" {
			ownHosts = true
		}
		mounts = append(mounts, sandboxMount{Source: src, Target: target, ReadOnly: vm.ReadOnly})
	}
	if !ownHosts && hostsFile != "" {
		mounts = append(mounts, sandboxMount{Source: hostsFile, Target: "/etc/hosts", ReadOnly: true})
	}
	return mounts, nil
}
