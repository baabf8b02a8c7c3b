"""The interactive explorer (``metaalliance explore``): a local Shiny app over the dataset.

``logic`` holds the server logic as plain functions that call the package API; ``app`` builds
the Shiny app from them. Nothing here is a second implementation of a model or a figure.
"""
