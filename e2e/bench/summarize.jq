# Turns the raw runs of bench.sh (an array of {kind, size, run, ...}) into
# results.json: medians per size and tool, ratios, and the targets met or missed.
def median: sort | if length == 0 then null
  elif length % 2 == 1 then .[length / 2 | floor]
  else (.[length / 2 - 1] + .[length / 2]) / 2 end;
def r(n): if . == null then null else (. * pow(10; n) | round) / pow(10; n) end;
def mbps: .bytes / 1e6 / .upload;
def med(f): map(f) | median | r(2);

. as $runs
| ($runs | map(.size) | unique) as $sizes
| [ $sizes[] as $s
    | ($runs | map(select(.size == $s))) as $at
    | ($at | map(select(.kind == "hcpsnap"))) as $h
    | ($at | map(select(.kind == "hcpsnap-hold"))) as $hh
    | ($at | map(select(.kind == "peer"))) as $p
    | ($at | map(select(.kind == "limit-upload"))) as $u
    | {
        sizeMiB: $s,
        runs: ($h | length),
        snapshotMB: ($h | med(.bytes / 1e6)),
        hcpsnap: {
          downtimeSeconds: ($h | med(.downtime)),
          downtimeFromEventsSeconds: ($h | med(.downtime_events)),
          revisionFixedSeconds: ($h | med(.snapshot_save)),
          endToEndSeconds: ($h | med(.e2e)),
          uploadWhileWrittenSeconds: ($h | med(.upload)),
          snapshotToS3Seconds: ($h | med(.snapshot_to_s3)),
          snapshotToS3MBps: ($h | med(.bytes / 1e6 / .snapshot_to_s3)),
          peakRSSMiB: ($h + $hh | med(.rss_kib / 1024)),
          peakRSSMaxMiB: ($h + $hh | map(.rss_kib / 1024) | max | r(2)),
          restoreVerifySeconds: ($h + $hh | med(.restore_verify))
        },
        hold: {
          downtimeSeconds: ($hh | med(.downtime)),
          snapshotSaveStepSeconds: ($hh | med(.snapshot_save)),
          endToEndSeconds: ($hh | med(.e2e)),
          uploadSeconds: ($hh | med(.upload)),
          uploadMBps: ($hh | med(mbps))
        },
        peer: {
          downtimeSeconds: ($p | med(.downtime)),
          snapshotSaveSeconds: ($p | med(.snapshot_save)),
          endToEndSeconds: ($p | med(.e2e)),
          uploadSeconds: ($p | med(.upload)),
          uploadMBps: ($p | med(mbps))
        },
        limits: {
          snapshotSaveSeconds: ($at | map(select(.kind == "limit-snapshot")) | med(.seconds)),
          awsS3CpSeconds: ($u | med(.seconds)),
          awsS3CpMBps: ($u | med(.bytes / 1e6 / .seconds)),
          kubectlExecCatMBps: ($at | map(select(.kind == "limit-exec")) | med(.bytes / 1e6 / .seconds))
        }
      }
    | .ratios = {
        downtimeVsPeer: (.hcpsnap.downtimeSeconds / .peer.downtimeSeconds | r(2)),
        endToEndVsPeer: (.hcpsnap.endToEndSeconds / .peer.endToEndSeconds | r(2)),
        uploadVsAwsS3Cp: (.hold.uploadMBps / .limits.awsS3CpMBps | r(2)),
        peerUploadVsAwsS3Cp: (.peer.uploadMBps / .limits.awsS3CpMBps | r(2))
      }
  ] as $bysize
| ($bysize | last) as $L
| ($bysize | first) as $S
| {
    date: $date,
    machine: $machine,
    hcpsnapVersion: $hcpsnap_version,
    sizes: $bysize,
    targets: ([
      { target: "downtime at \($L.sizeMiB) MiB <= half of the peer's",
        value: $L.hcpsnap.downtimeSeconds, limit: ($L.peer.downtimeSeconds / 2 | r(2)),
        met: ($L.hcpsnap.downtimeSeconds <= $L.peer.downtimeSeconds / 2) },
      { target: "downtime at \($L.sizeMiB) MiB <= snapshot-save limit + 10 s",
        value: $L.hcpsnap.downtimeSeconds, limit: ($L.limits.snapshotSaveSeconds + 10 | r(2)),
        met: ($L.hcpsnap.downtimeSeconds <= $L.limits.snapshotSaveSeconds + 10) }
    ]
    + [ $bysize[]
        | { target: "end-to-end at \(.sizeMiB) MiB no slower than the peer",
            value: .hcpsnap.endToEndSeconds, limit: .peer.endToEndSeconds,
            met: (.hcpsnap.endToEndSeconds <= .peer.endToEndSeconds) },
          { target: "upload throughput at \(.sizeMiB) MiB (complete file) >= 80% of aws s3 cp (MB/s)",
            value: .hold.uploadMBps, limit: (.limits.awsS3CpMBps * 0.8 | r(2)),
            met: (.hold.uploadMBps >= .limits.awsS3CpMBps * 0.8) },
          { target: "peak RSS at \(.sizeMiB) MiB < 100 MiB (max of runs)",
            value: .hcpsnap.peakRSSMaxMiB, limit: 100, met: (.hcpsnap.peakRSSMaxMiB < 100) } ]
    + [ if ($bysize | length) < 2 then
          { target: "peak RSS flat across sizes (largest <= 1.2 x smallest)", value: null, limit: null, met: null }
        else
          { target: "peak RSS flat from \($S.sizeMiB) to \($L.sizeMiB) MiB (largest <= 1.2 x smallest)",
            value: $L.hcpsnap.peakRSSMiB, limit: ($S.hcpsnap.peakRSSMiB * 1.2 | r(2)),
            met: ($L.hcpsnap.peakRSSMiB <= $S.hcpsnap.peakRSSMiB * 1.2) }
        end ]),
    raw: $runs
  }
