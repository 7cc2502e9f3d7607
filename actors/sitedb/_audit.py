"""The queries ``cmdist check`` asks a site database (read-only)."""

from __future__ import annotations

from actors.sitedb.enums import JobState, PkgStatusType, PkgStatusValue

# Installed DP rows of this site, with whether work for that DP and package is pending
# (a package or DP action, an open job): then the DP may hold another version for now.
_INSTALLED_ROWS = f"""
SELECT st.ID, st.PkgServer, p.StoredPkgVersion,
  p.Action <> 0
  OR EXISTS (SELECT 1 FROM PkgServers s WHERE s.PkgID = st.ID AND s.NALPath = st.PkgServer
             AND (s.Action <> 0 OR s.RefreshTrigger <> 0))
  OR EXISTS (SELECT 1 FROM DistributionJobs j JOIN DistributionPoints d ON d.DPID = j.DPID
             WHERE d.NALPath = st.PkgServer AND j.PkgID = st.ID
             AND j.State <> {int(JobState.FAILED)})
FROM PkgStatus st JOIN SMSPackages p ON p.PkgID = st.ID
WHERE st.Type = {int(PkgStatusType.DP)} AND st.SiteCode = ?
  AND st.Status = {int(PkgStatusValue.INSTALLED)}
ORDER BY st.ID, st.PkgServer
"""

# What may target a DP: a PkgServers row (any action, REMOVE too: removal pending) or an
# open job.
_TARGETS = f"""
SELECT PkgID, NALPath FROM PkgServers WHERE SiteCode = ?
UNION SELECT j.PkgID, d.NALPath FROM DistributionJobs j JOIN DistributionPoints d
  ON d.DPID = j.DPID WHERE d.SiteCode = ? AND j.State <> {int(JobState.FAILED)}
"""

_ORPHAN_ROWS = (
    (
        "DistributionJobs",
        "SELECT 'job ' || JobID || ' for package ' || PkgID || ' (DPID ' || DPID || ')'"
        " FROM DistributionJobs WHERE PkgID NOT IN (SELECT PkgID FROM SMSPackages)",
        "its package is not in SMSPackages",
    ),
    (
        "DistributionJobs",
        "SELECT 'job ' || JobID || ' for package ' || PkgID || ' (DPID ' || DPID || ')'"
        " FROM DistributionJobs WHERE DPID NOT IN (SELECT DPID FROM DistributionPoints)",
        "its DP is not in DistributionPoints",
    ),
    (
        "PkgStatus",
        "SELECT 'status of package ' || ID || ' (Type ' || Type || ') on ' || PkgServer"
        " FROM PkgStatus WHERE ID NOT IN (SELECT PkgID FROM SMSPackages)",
        "its package is not in SMSPackages",
    ),
    (
        "PkgServers",
        "SELECT 'package ' || PkgID || ' on ' || NALPath"
        " FROM PkgServers WHERE PkgID NOT IN (SELECT PkgID FROM SMSPackages)",
        "its package is not in SMSPackages",
    ),
)
