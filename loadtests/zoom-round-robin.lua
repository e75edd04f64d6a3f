-- wrk script: every tile of one zoom level in a fixed order, round and round (default zoom
-- 6: 4,096 tiles). The zoom is the first argument after `--`. Use with -t1 (the counter is
-- per thread).
zoom = 6
counter = 0
init = function(args)
  zoom = tonumber(args[1]) or zoom
end
request = function()
  local side = 2 ^ zoom
  local i = counter % (side * side)
  counter = counter + 1
  return wrk.format("GET", "/tiles/" .. zoom .. "/" .. math.floor(i % side) .. "/" .. math.floor(i / side) .. ".png")
end
