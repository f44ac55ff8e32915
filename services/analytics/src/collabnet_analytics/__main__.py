from collabnet_analytics.app import NAME, Settings, create
from collabnet_kit.entrypoint import main

main(NAME, Settings, create)
