package nodeagent

import (
	"errors"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "a", "PEERS": "x=1,y=2", "EMPTY": ""}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"$(A)", "a"},
		{"--peers=$(PEERS)", "--peers=x=1,y=2"},
		{"$(A)$(A)", "aa"},
		{"$(UNKNOWN)", "$(UNKNOWN)"},
		{"$$(A)", "$(A)"},
		{"$$", "$"},
		{"cost $5", "cost $5"},
		{"trailing $", "trailing $"},
		{"$(A", "$(A"},
		{"$()", "$()"},
		{"[$(EMPTY)]", "[]"},
		{"$$$(A)", "$a"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := expand(tt.in, lookup); got != tt.want {
				t.Errorf("expand(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

type fakeObjects struct {
	secrets    map[string]map[string][]byte
	configMaps map[string]map[string]string
}

func (f fakeObjects) secret(ns, name string) (map[string][]byte, error) {
	if s, ok := f.secrets[ns+"/"+name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func (f fakeObjects) configMap(ns, name string) (map[string]string, error) {
	if c, ok := f.configMaps[ns+"/"+name]; ok {
		return c, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func TestContainerEnv(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: "etcd-1", Namespace: "clusters-a", UID: "u1", Labels: map[string]string{"app": "etcd"},
	}}
	objects := fakeObjects{
		secrets:    map[string]map[string][]byte{"clusters-a/s": {"password": []byte("pw")}},
		configMaps: map[string]map[string]string{"clusters-a/cm": {"B": "b", "A": "a"}},
	}
	field := func(p string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: p}}
	}
	tests := []struct {
		name    string
		c       corev1.Container
		want    []envVar
		wantErr bool
	}{{
		name: "defaults",
		want: []envVar{{"PATH", defaultPath}, {"HOSTNAME", "etcd-1"}},
	}, {
		name: "values, fieldRefs and expansion of earlier variables only",
		c: corev1.Container{Env: []corev1.EnvVar{
			{Name: "NAME", ValueFrom: field("metadata.name")},
			{Name: "NS", ValueFrom: field("metadata.namespace")},
			{Name: "IP", ValueFrom: field("status.podIP")},
			{Name: "APP", ValueFrom: field("metadata.labels['app']")},
			{Name: "URL", Value: "http://$(IP):2379/$(NAME).$(NS)/$(LATER)"},
			{Name: "LATER", Value: "x"},
			{Name: "PATH", Value: "/opt/bin:$(PATH)"},
		}},
		want: []envVar{
			{"PATH", "/opt/bin:" + defaultPath}, {"HOSTNAME", "etcd-1"}, {"NAME", "etcd-1"}, {"NS", "clusters-a"},
			{"IP", "127.0.0.11"}, {"APP", "etcd"}, {"URL", "http://127.0.0.11:2379/etcd-1.clusters-a/$(LATER)"},
			{"LATER", "x"},
		},
	}, {
		name: "secret and configMap references",
		c: corev1.Container{
			EnvFrom: []corev1.EnvFromSource{{Prefix: "CM_", ConfigMapRef: &corev1.ConfigMapEnvSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "cm"},
			}}},
			Env: []corev1.EnvVar{
				{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "password",
				}}},
				{Name: "OPT", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "missing"}, Key: "k", Optional: ptr.To(true),
				}}},
			},
		},
		want: []envVar{{"PATH", defaultPath}, {"HOSTNAME", "etcd-1"}, {"CM_A", "a"}, {"CM_B", "b"}, {"PW", "pw"}},
	}, {
		name: "missing secret",
		c: corev1.Container{Env: []corev1.EnvVar{{Name: "PW", ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k"},
		}}}},
		wantErr: true,
	}, {
		name:    "unsupported fieldRef",
		c:       corev1.Container{Env: []corev1.EnvVar{{Name: "X", ValueFrom: field("spec.nope")}}},
		wantErr: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := containerEnv(pod, &tt.c, baseEnv(nil, nil), "127.0.0.11", "127.0.0.1", objects)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("env = %v\nwant  %v", got, tt.want)
			}
		})
	}
}

func TestExpandAllUsesFinalEnv(t *testing.T) {
	env := []envVar{{"A", "1"}, {"B", "two words"}}
	got := expandAll([]string{"etcd", "--a=$(A)", "$(B)", "$$(A)"}, env)
	want := []string{"etcd", "--a=1", "two words", "$(A)"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := environ(env); !reflect.DeepEqual(got, []string{"A=1", "B=two words"}) {
		t.Errorf("environ = %q", got)
	}
	if !isNotFound(apierrors.NewNotFound(schema.GroupResource{}, "x")) || isNotFound(errors.New("x")) {
		t.Error("isNotFound")
	}
}
