package nodeagent

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestComputeStatus(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 600, time.UTC)
	now := t0.Add(time.Minute)
	pod := func(policy corev1.RestartPolicy, names ...string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u"}, Spec: corev1.PodSpec{RestartPolicy: policy}}
		for _, n := range names {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: n, Image: "img"})
		}
		p.Status.QOSClass = corev1.PodQOSBestEffort
		return p
	}
	running := func(name string, ready bool) containerSnapshot {
		return containerSnapshot{Name: name, Running: true, StartedAt: t0, ProbeReady: ready}
	}
	exited := func(name string, code int32, final bool) containerSnapshot {
		return containerSnapshot{Name: name, Final: final, RestartCount: 1, Waiting: "CrashLoopBackOff",
			LastExit: &exitRecord{ExitCode: code, StartedAt: t0, FinishedAt: t0.Add(time.Second)}}
	}
	tests := []struct {
		name      string
		pod       *corev1.Pod
		snap      podSnapshot
		wantPhase corev1.PodPhase
		wantReady corev1.ConditionStatus
		check     func(t *testing.T, st corev1.PodStatus)
	}{{
		name:      "not started yet",
		pod:       pod(corev1.RestartPolicyAlways, "a"),
		snap:      podSnapshot{HostIP: "127.0.0.1", InitDone: true},
		wantPhase: corev1.PodPending, wantReady: corev1.ConditionFalse,
		check: func(t *testing.T, st corev1.PodStatus) {
			if w := st.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != "ContainerCreating" {
				t.Errorf("state = %+v", st.ContainerStatuses[0].State)
			}
		},
	}, {
		name:      "all running and ready",
		pod:       pod(corev1.RestartPolicyAlways, "a", "b"),
		snap:      podSnapshot{PodIP: "127.0.0.11", HostIP: "127.0.0.1", StartTime: t0, InitDone: true, Containers: []containerSnapshot{running("a", true), running("b", true)}},
		wantPhase: corev1.PodRunning, wantReady: corev1.ConditionTrue,
		check: func(t *testing.T, st corev1.PodStatus) {
			if st.PodIP != "127.0.0.11" || st.PodIPs[0].IP != "127.0.0.11" || st.HostIP != "127.0.0.1" {
				t.Errorf("IPs: %+v", st)
			}
			if !st.StartTime.Time.Equal(t0.Truncate(time.Second)) {
				t.Errorf("startTime %v not cut to seconds", st.StartTime)
			}
			if st.QOSClass != corev1.PodQOSBestEffort {
				t.Error("qosClass lost")
			}
			cs := st.ContainerStatuses[1]
			if !cs.Ready || !*cs.Started || cs.State.Running == nil || cs.Name != "b" {
				t.Errorf("container status %+v", cs)
			}
		},
	}, {
		name:      "running but probe not passed",
		pod:       pod(corev1.RestartPolicyAlways, "a", "b"),
		snap:      podSnapshot{InitDone: true, Containers: []containerSnapshot{running("a", true), running("b", false)}},
		wantPhase: corev1.PodRunning, wantReady: corev1.ConditionFalse,
	}, {
		name:      "crash looping counts as running, not ready",
		pod:       pod(corev1.RestartPolicyAlways, "a"),
		snap:      podSnapshot{InitDone: true, Containers: []containerSnapshot{exited("a", 1, false)}},
		wantPhase: corev1.PodRunning, wantReady: corev1.ConditionFalse,
		check: func(t *testing.T, st corev1.PodStatus) {
			cs := st.ContainerStatuses[0]
			if cs.RestartCount != 1 || cs.State.Waiting.Reason != "CrashLoopBackOff" || cs.LastTerminationState.Terminated.ExitCode != 1 {
				t.Errorf("container status %+v", cs)
			}
		},
	}, {
		name:      "never: failed",
		pod:       pod(corev1.RestartPolicyNever, "a", "b"),
		snap:      podSnapshot{InitDone: true, Containers: []containerSnapshot{exited("a", 0, true), exited("b", 2, true)}},
		wantPhase: corev1.PodFailed, wantReady: corev1.ConditionFalse,
		check: func(t *testing.T, st corev1.PodStatus) {
			if term := st.ContainerStatuses[1].State.Terminated; term == nil || term.ExitCode != 2 || term.Reason != "Error" {
				t.Errorf("state %+v", st.ContainerStatuses[1].State)
			}
		},
	}, {
		name:      "onFailure: succeeded",
		pod:       pod(corev1.RestartPolicyOnFailure, "a"),
		snap:      podSnapshot{InitDone: true, Containers: []containerSnapshot{exited("a", 0, true)}},
		wantPhase: corev1.PodSucceeded, wantReady: corev1.ConditionFalse,
	}, {
		name: "init container running",
		pod: func() *corev1.Pod {
			p := pod(corev1.RestartPolicyAlways, "a")
			p.Spec.InitContainers = []corev1.Container{{Name: "init"}}
			return p
		}(),
		snap:      podSnapshot{InitContainers: []containerSnapshot{running("init", true)}},
		wantPhase: corev1.PodPending, wantReady: corev1.ConditionFalse,
		check: func(t *testing.T, st corev1.PodStatus) {
			if st.ContainerStatuses[0].State.Waiting.Reason != "PodInitializing" || st.InitContainerStatuses[0].Ready {
				t.Errorf("statuses %+v %+v", st.ContainerStatuses, st.InitContainerStatuses)
			}
			if c := condition(st, corev1.PodInitialized); c.Status != corev1.ConditionFalse {
				t.Errorf("initialized %+v", c)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := computeStatus(tt.pod, tt.snap, now)
			if st.Phase != tt.wantPhase {
				t.Errorf("phase = %s, want %s", st.Phase, tt.wantPhase)
			}
			if c := condition(st, corev1.PodReady); c.Status != tt.wantReady {
				t.Errorf("Ready = %s, want %s", c.Status, tt.wantReady)
			}
			if c := condition(st, corev1.PodScheduled); c.Status != corev1.ConditionTrue {
				t.Errorf("PodScheduled = %s", c.Status)
			}
			if tt.check != nil {
				tt.check(t, st)
			}
		})
	}
}

func TestComputeStatusIsStable(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 600, time.UTC)
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}}}
	pod.Status.Conditions = []corev1.PodCondition{{Type: "example.com/gate", Status: corev1.ConditionTrue}}
	snap := podSnapshot{PodIP: "127.0.1.2", HostIP: "127.0.0.1", StartTime: t0, InitDone: true,
		Containers: []containerSnapshot{{Name: "a", Running: true, StartedAt: t0, ProbeReady: true}}}
	first := computeStatus(pod, snap, t0)
	pod.Status = first
	second := computeStatus(pod, snap, t0.Add(time.Hour))
	if !equality.Semantic.DeepEqual(first, second) {
		t.Errorf("status changed without a change of the pod:\n%+v\n%+v", first, second)
	}
	if c := condition(second, "example.com/gate"); c.Status != corev1.ConditionTrue {
		t.Error("foreign condition dropped")
	}
}

func condition(st corev1.PodStatus, typ corev1.PodConditionType) corev1.PodCondition {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return corev1.PodCondition{}
}
