-- Argo CD resource actions for taskmaster.dev/ScheduledTask: run-now always
-- (disabled while the spec is Invalid or the task is being deleted), suspend
-- unless suspended, and resume when suspended or stopped after failures.
local actions = {}

local invalid = obj.status ~= nil and obj.status.phase == "Invalid"
local deleting = obj.metadata.deletionTimestamp ~= nil
actions["run-now"] = {
  ["displayName"] = "Run now",
  ["iconClass"] = "fa fa-fw fa-play-circle",
  ["disabled"] = invalid or deleting,
}

local stopped = obj.status ~= nil and obj.status.phase == "Stopped"
if obj.spec.suspend == true or stopped then
  actions["resume"] = {["iconClass"] = "fa fa-fw fa-play"}
end
if obj.spec.suspend ~= true then
  actions["suspend"] = {["iconClass"] = "fa fa-fw fa-pause"}
end

return actions
