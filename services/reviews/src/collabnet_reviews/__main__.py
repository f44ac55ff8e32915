from collabnet_kit.entrypoint import main
from collabnet_reviews.app import NAME, Settings, create

main(NAME, Settings, create)
