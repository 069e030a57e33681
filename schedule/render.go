package schedule

import (
	"bytes"
	"fmt"
	"io"
	"path"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// Paths and values inside the job's pod.
const (
	// ContainerName is the name of the pod's one container.
	ContainerName = "backup"
	// TmpDir is an emptyDir: the image's root file system is read-only, and
	// the run files (HCPSNAP_STATE_DIR) and any temporary file go here.
	TmpDir   = "/tmp"
	StateDir = "/tmp/hcpsnap"
	// S3CAKey is the key of the CA ConfigMap, mounted at S3CADir.
	S3CAKey = "ca.crt"
	S3CADir = "/etc/hcpsnap/s3-ca"
	// The web identity token: a projected ServiceAccount token for AWS STS.
	WebIdentityAudience = "sts.amazonaws.com"
	WebIdentityDir      = "/var/run/secrets/sts.amazonaws.com/serviceaccount"
	WebIdentityTokenTTL = 3600
	// Keys of the S3 credentials Secret; they are the AWS SDK's variable
	// names, so `kubectl create secret generic NAME --from-env-file` of an
	// AWS env file makes one. AWS_SESSION_TOKEN is optional.
	SecretKeyAccessKeyID     = "AWS_ACCESS_KEY_ID"
	SecretKeySecretAccessKey = "AWS_SECRET_ACCESS_KEY"
	SecretKeySessionToken    = "AWS_SESSION_TOKEN"
	// TerminationGrace is how long the pod has after SIGTERM (a deleted Job,
	// an active deadline): hcpsnap undoes its changes then, scale-up first,
	// and needs more than the default 30 seconds for it.
	TerminationGrace = 300
)

// GlobalArgs come before `backup` in the container's arguments: logs as
// JSON for the log collector, and the summary as one JSON line.
var GlobalArgs = []string{"--log-format=json", "--output=json"}

// Objects are the objects of one schedule, in the order they are applied:
// the role and the identity before the bindings that join them, the CronJob
// last, so that its first run finds its permissions in place. A schedule
// leaves out what its job does not need: a verify schedule has no RBAC at
// all, so any field may be nil.
type Objects struct {
	ClusterRole *rbacv1.ClusterRole
	// NodeClusterRole, for a pull-node schedule, holds the cluster-wide
	// rules (nodes get) that its ClusterRoleBinding grants, apart from the
	// pod rules that ClusterRole grants in the job's namespace only.
	NodeClusterRole    *rbacv1.ClusterRole
	ServiceAccount     *corev1.ServiceAccount
	RoleBindings       []*rbacv1.RoleBinding
	ClusterRoleBinding *rbacv1.ClusterRoleBinding
	CronJob            *batchv1.CronJob
}

// List returns the objects that are set, in their apply order. It never
// holds a nil: a typed nil pointer in a runtime.Object would pass a nil
// check and fail where Apply reads its name.
func (o *Objects) List() []runtime.Object {
	var l []runtime.Object
	if o.ClusterRole != nil {
		l = append(l, o.ClusterRole)
	}
	if o.NodeClusterRole != nil {
		l = append(l, o.NodeClusterRole)
	}
	if o.ServiceAccount != nil {
		l = append(l, o.ServiceAccount)
	}
	for _, rb := range o.RoleBindings {
		if rb != nil {
			l = append(l, rb)
		}
	}
	if o.ClusterRoleBinding != nil {
		l = append(l, o.ClusterRoleBinding)
	}
	if o.CronJob != nil {
		l = append(l, o.CronJob)
	}
	return l
}

// Render builds the objects of s. It validates s first.
func Render(s Spec) (*Objects, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	lbl := Labels(s.JobNamespace, s.Name)
	meta := func(namespace, name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: copyMap(lbl)}
	}
	rbacName := RBACName(s.JobNamespace, s.Name)
	o := &Objects{
		ClusterRole: &rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
			ObjectMeta: meta("", rbacName),
			Rules:      s.Rules,
		},
		ServiceAccount: &corev1.ServiceAccount{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
			ObjectMeta: meta(s.JobNamespace, s.Name),
		},
	}
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: s.Name, Namespace: s.JobNamespace}}
	roleRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: rbacName}
	if s.Target.IsFleet() {
		// A selector's clusters, today's and tomorrow's, have control plane
		// namespaces nobody can name now: only a cluster-wide binding covers
		// them.
		o.ClusterRoleBinding = &rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
			ObjectMeta: meta("", rbacName), Subjects: subjects, RoleRef: roleRef,
		}
	} else {
		// The HostedCluster's namespace and its control plane's, and no other.
		for _, ns := range []string{s.Target.Namespace, s.Target.Namespace + "-" + s.Target.Cluster} {
			o.RoleBindings = append(o.RoleBindings, &rbacv1.RoleBinding{
				TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
				ObjectMeta: meta(ns, rbacName), Subjects: subjects, RoleRef: roleRef,
			})
		}
	}
	o.CronJob = cronJob(s, meta(s.JobNamespace, s.Name), lbl, s.Target.String(), podSpec(s, "backup", s.BackupArgs))
	return o, nil
}

func cronJob(s Spec, meta metav1.ObjectMeta, lbl map[string]string, target string, pod corev1.PodSpec) *batchv1.CronJob {
	meta.Annotations = map[string]string{AnnotationTarget: target}
	var activeDeadline *int64
	if s.ActiveDeadline > 0 {
		activeDeadline = ptr.To(int64(s.ActiveDeadline.Seconds()))
	}
	return &batchv1.CronJob{
		TypeMeta:   metav1.TypeMeta{APIVersion: "batch/v1", Kind: "CronJob"},
		ObjectMeta: meta,
		Spec: batchv1.CronJobSpec{
			Schedule:                   s.Cron,
			TimeZone:                   ptr.To(s.TimeZone),
			StartingDeadlineSeconds:    ptr.To(int64(s.StartingDeadline.Seconds())),
			ConcurrencyPolicy:          batchv1.ForbidConcurrent,
			Suspend:                    ptr.To(s.Suspend),
			SuccessfulJobsHistoryLimit: ptr.To(s.SuccessfulJobsHistory),
			FailedJobsHistoryLimit:     ptr.To(s.FailedJobsHistory),
			JobTemplate: batchv1.JobTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: copyMap(lbl)},
				Spec: batchv1.JobSpec{
					// No retry: a failed backup has undone its changes (or
					// says what is left to do, and holds the cluster's lock
					// until someone does it), and another attempt would take
					// the API down again; the next scheduled run is the retry.
					BackoffLimit:          ptr.To[int32](0),
					ActiveDeadlineSeconds: activeDeadline,
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: copyMap(lbl)},
						Spec:       pod,
					},
				},
			},
		},
	}
}

// podSpec is the job's pod, running hcpsnap's command with its arguments.
func podSpec(s Spec, command string, commandArgs []string) corev1.PodSpec {
	args := append(append(append([]string{}, GlobalArgs...), command), commandArgs...)
	env := []corev1.EnvVar{{Name: "HCPSNAP_STATE_DIR", Value: StateDir}}
	if s.Region != "" {
		env = append(env, corev1.EnvVar{Name: "AWS_REGION", Value: s.Region})
	}
	if s.S3Endpoint != "" {
		env = append(env, corev1.EnvVar{Name: "AWS_ENDPOINT_URL_S3", Value: s.S3Endpoint})
	}
	volumes := []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	mounts := []corev1.VolumeMount{{Name: "tmp", MountPath: TmpDir}}
	if c := s.Credentials; c.Secret != "" {
		key := func(name, key string, optional bool) corev1.EnvVar {
			ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: c.Secret}, Key: key}
			if optional {
				ref.Optional = ptr.To(true)
			}
			return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: ref}}
		}
		env = append(env,
			key("AWS_ACCESS_KEY_ID", SecretKeyAccessKeyID, false),
			key("AWS_SECRET_ACCESS_KEY", SecretKeySecretAccessKey, false),
			key("AWS_SESSION_TOKEN", SecretKeySessionToken, true))
	} else {
		env = append(env,
			corev1.EnvVar{Name: "AWS_ROLE_ARN", Value: c.RoleARN},
			corev1.EnvVar{Name: "AWS_WEB_IDENTITY_TOKEN_FILE", Value: path.Join(WebIdentityDir, "token")})
		volumes = append(volumes, corev1.Volume{Name: "aws-web-identity-token", VolumeSource: corev1.VolumeSource{
			Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{
				ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Audience: WebIdentityAudience, ExpirationSeconds: ptr.To[int64](WebIdentityTokenTTL), Path: "token"},
			}}},
		}})
		mounts = append(mounts, corev1.VolumeMount{Name: "aws-web-identity-token", MountPath: WebIdentityDir, ReadOnly: true})
	}
	if s.S3CAConfigMap != "" {
		volumes = append(volumes, corev1.Volume{Name: "s3-ca", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: s.S3CAConfigMap},
			Items:                []corev1.KeyToPath{{Key: S3CAKey, Path: S3CAKey}},
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "s3-ca", MountPath: S3CADir, ReadOnly: true})
		args = append(args, "--s3-ca-bundle="+path.Join(S3CADir, S3CAKey))
	}
	return corev1.PodSpec{
		ServiceAccountName: s.Name,
		// hcpsnap talks to the API as this ServiceAccount (in-cluster
		// configuration), whatever the ServiceAccount's default says.
		AutomountServiceAccountToken:  ptr.To(true),
		RestartPolicy:                 corev1.RestartPolicyNever,
		TerminationGracePeriodSeconds: ptr.To[int64](TerminationGrace),
		// OpenShift's restricted-v2 SCC and the restricted Pod Security
		// Standard: no root, no privilege, the runtime's seccomp profile,
		// any UID the platform assigns.
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{{
			Name:            ContainerName,
			Image:           s.Image,
			ImagePullPolicy: corev1.PullIfNotPresent,
			Args:            args,
			Env:             env,
			VolumeMounts:    mounts,
			SecurityContext: &corev1.SecurityContext{
				RunAsNonRoot:             ptr.To(true),
				AllowPrivilegeEscalation: ptr.To(false),
				ReadOnlyRootFilesystem:   ptr.To(true),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
		}},
		Volumes: volumes,
	}
}

func copyMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// ToUnstructured turns a typed object into the map that is applied and
// written: no status, and none of the null creationTimestamps that a typed
// object carries at every level of metadata.
func ToUnstructured(obj runtime.Object) (map[string]any, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	delete(m, "status")
	dropNullTimestamps(m)
	return m, nil
}

func dropNullTimestamps(v any) {
	switch t := v.(type) {
	case map[string]any:
		if ts, ok := t["creationTimestamp"]; ok && ts == nil {
			delete(t, "creationTimestamp")
		}
		for _, c := range t {
			dropNullTimestamps(c)
		}
	case []any:
		for _, c := range t {
			dropNullTimestamps(c)
		}
	}
}

// WriteYAML writes the objects as one YAML stream, a document each, in the
// given order and with sorted keys, so that a render is stable from one run
// to the next and diffs well in Git.
func WriteYAML(w io.Writer, header string, objs []runtime.Object) error {
	var b bytes.Buffer
	if header != "" {
		b.WriteString(header)
	}
	for i, obj := range objs {
		m, err := ToUnstructured(obj)
		if err != nil {
			return err
		}
		y, err := yaml.Marshal(m)
		if err != nil {
			return fmt.Errorf("encode %T: %w", obj, err)
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	_, err := w.Write(b.Bytes())
	return err
}
