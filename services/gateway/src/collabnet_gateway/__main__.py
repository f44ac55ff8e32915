from collabnet_gateway.app import NAME, Settings, create
from collabnet_kit.entrypoint import main

main(NAME, Settings, create)
