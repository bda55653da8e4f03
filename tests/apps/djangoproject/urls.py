from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("form/", views.form),
    path("where/", views.where),
    path("async/", views.async_view),
]
