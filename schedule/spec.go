package schedule

import (
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The labels that make an object a schedule's: Apply, List and Delete act on
// an object only when it carries all three with the schedule's values.
const (
	LabelManagedBy         = "app.kubernetes.io/managed-by"
	ManagedBy              = "hcpsnap"
	LabelSchedule          = "hcpsnap.io/schedule"
	LabelScheduleNamespace = "hcpsnap.io/schedule-namespace"
	// AnnotationTarget on the CronJob says what it backs up, for --list.
	AnnotationTarget = "hcpsnap.io/target"
	// FieldManager is the server-side apply field manager of every write.
	FieldManager = "hcpsnap"
)

// MaxNameLength is the longest schedule name: the CronJob controller names
// each Job <cronjob>-<11 characters>, and a Job name has 63 at most.
const MaxNameLength = 52

// Target is what a schedule backs up: one HostedCluster (Cluster), or every
// HostedCluster that matches Selector in Namespace, or in every namespace.
type Target struct {
	Namespace     string
	Cluster       string
	Selector      string
	AllNamespaces bool
}

// IsFleet reports whether the target is chosen by a selector rather than
// named, so that it spans control plane namespaces unknown today.
func (t Target) IsFleet() bool { return t.Cluster == "" }

// String says the target in words, as the CronJob's annotation and --list
// show it.
func (t Target) String() string {
	switch {
	case !t.IsFleet():
		return "cluster " + t.Namespace + "/" + t.Cluster
	case t.AllNamespaces && t.Selector == "":
		return "every cluster, all namespaces"
	case t.AllNamespaces:
		return "selector " + t.Selector + ", all namespaces"
	default:
		return "selector " + t.Selector + " in " + t.Namespace
	}
}

// Credentials say where the job's S3 credentials come from: exactly one of
// a Secret in the job's namespace or an IAM role assumed with the pod's
// projected ServiceAccount token (web identity).
type Credentials struct {
	Secret  string
	RoleARN string
}

// Spec is everything a schedule's objects are rendered from. It is plain
// data: the command line fills it from flags and checks each flag, Validate
// checks the whole.
type Spec struct {
	// Name is the schedule's name: the CronJob's and the ServiceAccount's,
	// and the value of LabelSchedule.
	Name string
	// JobNamespace is where the CronJob, its Jobs and the ServiceAccount live.
	JobNamespace string
	Target       Target
	// Cron is the CronJob schedule, TimeZone its IANA time zone.
	Cron     string
	TimeZone string
	// StartingDeadline is how late a missed run may still start.
	StartingDeadline time.Duration
	// ActiveDeadline bounds a Job's run; 0 leaves it unbounded.
	ActiveDeadline time.Duration
	// SuccessfulJobsHistory and FailedJobsHistory are the finished Jobs kept.
	SuccessfulJobsHistory int32
	FailedJobsHistory     int32
	Suspend               bool
	// Image is the hcpsnap image, pinned by digest.
	Image string
	// BackupArgs are the options of `hcpsnap backup` after the word backup,
	// the target's included.
	BackupArgs  []string
	Credentials Credentials
	// S3Endpoint and Region become AWS_ENDPOINT_URL_S3 and AWS_REGION of
	// the pod when set; the AWS SDK's chain finds them otherwise.
	S3Endpoint string
	Region     string
	// S3CAConfigMap names a ConfigMap of the job's namespace whose key
	// S3CAKey is the PEM of the S3 endpoint's CA.
	S3CAConfigMap string
	// Rules are the ServiceAccount's rules: deploy/rbac.yaml's
	// hcpsnap-backup.
	Rules []rbacv1.PolicyRule
}

// Validate checks the Spec as a whole, without I/O. The command line checks
// each flag first, with messages that name it; this is the last word.
func (s *Spec) Validate() error {
	t := s.Target
	switch {
	case t.Cluster != "" && (t.Selector != "" || t.AllNamespaces):
		return fmt.Errorf("a schedule backs up one cluster or a selector's clusters, not both")
	case t.Cluster == "" && t.Selector == "" && !t.AllNamespaces:
		return fmt.Errorf("a schedule needs a cluster, a selector or all namespaces")
	case !t.AllNamespaces && len(validation.IsDNS1123Label(t.Namespace)) > 0:
		return fmt.Errorf("namespace %q is not a valid namespace name", t.Namespace)
	}
	if t.Selector != "" {
		if _, err := labels.Parse(t.Selector); err != nil {
			return fmt.Errorf("selector %q: %w", t.Selector, err)
		}
	}
	if len(s.Rules) == 0 {
		return fmt.Errorf("no RBAC rules for the ServiceAccount")
	}
	return s.validateJob()
}

// validateJob checks what every schedule's job has, whatever it runs; the
// permissions it needs are each kind of schedule's to check.
func (s *Spec) validateJob() error {
	if err := CheckName(s.Name); err != nil {
		return fmt.Errorf("schedule name %q: %w", s.Name, err)
	}
	if errs := validation.IsDNS1123Label(s.JobNamespace); len(errs) > 0 {
		return fmt.Errorf("job namespace %q: %s", s.JobNamespace, errs[0])
	}
	if _, err := ParseCron(s.Cron); err != nil {
		return fmt.Errorf("schedule %q: %w", s.Cron, err)
	}
	if _, err := LoadTimeZone(s.TimeZone); err != nil {
		return fmt.Errorf("time zone %q: %w", s.TimeZone, err)
	}
	if err := CheckImage(s.Image); err != nil {
		return fmt.Errorf("image %q: %w", s.Image, err)
	}
	switch c := s.Credentials; {
	case c.Secret == "" && c.RoleARN == "":
		return fmt.Errorf("no S3 credentials: name a Secret or an IAM role")
	case c.Secret != "" && c.RoleARN != "":
		return fmt.Errorf("two sources of S3 credentials: keep the Secret or the IAM role")
	}
	if s.StartingDeadline < 10*time.Second {
		// The CronJob controller looks every 10 seconds: a shorter deadline
		// can make it skip every run.
		return fmt.Errorf("starting deadline %s is shorter than 10s, the CronJob controller's period", s.StartingDeadline)
	}
	if s.ActiveDeadline < 0 || s.SuccessfulJobsHistory < 0 || s.FailedJobsHistory < 0 {
		return fmt.Errorf("negative deadline or history limit")
	}
	return nil
}

// CheckName checks a schedule name: a DNS-1123 label short enough for the
// Jobs the CronJob controller names after it.
func CheckName(name string) error {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return fmt.Errorf("%s", errs[0])
	}
	if len(name) > MaxNameLength {
		return fmt.Errorf("it is %d characters long; a CronJob name has %d at most", len(name), MaxNameLength)
	}
	return nil
}

// DefaultName derives a schedule's name from its target:
// hcpsnap-<namespace>-<cluster> for one cluster, and for a selector
// hcpsnap-<namespace or all>-<the selector's letters and digits>-<hash>,
// the hash telling apart selectors that read alike. A name too long is cut
// and keeps a hash of the whole.
func DefaultName(t Target) string {
	ns := t.Namespace
	if t.AllNamespaces {
		ns = "all"
	}
	if !t.IsFleet() {
		return fitName("hcpsnap-"+ns+"-"+t.Cluster, "")
	}
	base := "hcpsnap-" + ns
	if s := nonAlnum.ReplaceAllString(strings.ToLower(t.Selector), "-"); strings.Trim(s, "-") != "" {
		base += "-" + strings.Trim(s, "-")
	}
	return fitName(base, shortHash(ns+"\x00"+t.Selector))
}

var nonAlnum = regexp.MustCompile(`[^a-z0-9]+`)

// fitName returns base, with "-suffix" when suffix is set, cut to
// MaxNameLength; a cut name always ends in a hash of what was cut.
func fitName(base, suffix string) string {
	if suffix == "" && len(base) <= MaxNameLength {
		return base
	}
	if suffix == "" {
		suffix = shortHash(base)
	}
	room := MaxNameLength - len(suffix) - 1
	if len(base) > room {
		base = strings.TrimRight(base[:room], "-")
	}
	return base + "-" + suffix
}

func shortHash(s string) string {
	h := fnv.New32a()
	h.Write([]byte(s))
	return fmt.Sprintf("%08x", h.Sum32())
}

// Labels are the ownership labels of the schedule namespace/name.
func Labels(namespace, name string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedBy, LabelSchedule: name, LabelScheduleNamespace: namespace}
}

// LabelSelector selects the objects of the schedule namespace/name.
func LabelSelector(namespace, name string) string {
	return labels.SelectorFromSet(Labels(namespace, name)).String()
}

// OwnedBy reports whether an object's labels make it the schedule's.
func OwnedBy(objLabels map[string]string, namespace, name string) bool {
	for k, v := range Labels(namespace, name) {
		if objLabels[k] != v {
			return false
		}
	}
	return true
}

// RBACName is the name of the schedule's ClusterRole and bindings. It holds
// the job namespace, since ClusterRoles and ClusterRoleBindings are not
// namespaced and the bindings live in the HostedClusters' namespaces, which
// schedules of several job namespaces may share.
func RBACName(jobNamespace, name string) string {
	return "hcpsnap-backup:" + jobNamespace + ":" + name
}
