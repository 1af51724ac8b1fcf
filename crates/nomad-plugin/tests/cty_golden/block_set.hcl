item {
  name = "zed"
  n    = 2
}
item {
  name = "alpha"
  n    = 10
  on   = true
}
item {
  name = "alpha"
  n    = 9
}
item {
  n = 1
}
item {
  name = "alpha"
  n    = 10
  on   = true
}
